package escape

import (
	"os"
	"path/filepath"

	"fmt"
	"github.com/cagent-dev/cagent/policy"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestIsolation covers the cases that hold without the proxy: the network
// beyond the gateway, dangerous syscalls, privileges and resources.
func TestIsolation(t *testing.T) {
	e := newEnv(t)
	web := netip.AddrPortFrom(e.inet.Web, 80).String()
	catcher := netip.AddrPortFrom(e.inet.Catcher, 7777).String()

	// A host service on 0.0.0.0 (as an admin UI or a database might be).
	hostSvc, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostSvc.Close()
	hostPort := hostSvc.Addr().(*net.TCPAddr).Port
	hostHits := make(chan string, 16)
	go func() {
		for {
			c, err := hostSvc.Accept()
			if err != nil {
				return
			}
			hostHits <- c.RemoteAddr().String()
			c.Close()
		}
	}()

	cases := []struct {
		name string
		args []string
	}{
		{"direct TCP to a fake-internet host", []string{"tcp", catcher}},
		{"direct TCP to the fake web server (ignoring the proxy)", []string{"tcp", web}},
		{"direct UDP to a fake-internet host", []string{"udp", catcher}},
		{"DNS straight to the fake internet's resolver", []string{"dns", e.inet.DNS.String(), "web.test"}},
		{"IPv6 socket", []string{"ipv6"}},
		{"raw socket", []string{"raw"}},
		{"packet socket", []string{"packet"}},
		{"io_uring", []string{"iouring"}},
		{"ptrace", []string{"syscall", "ptrace"}},
		{"bpf", []string{"syscall", "bpf"}},
		{"keyctl", []string{"syscall", "keyctl"}},
		{"mount", []string{"syscall", "mount"}},
		{"unshare user+net namespaces", []string{"syscall", "unshare"}},
		{"clone into new user+net namespaces", []string{"syscall", "clone-newuser"}},
		{"setns into the host network namespace", []string{"syscall", "setns"}},
		{"perf_event_open", []string{"syscall", "perf_event_open"}},
		{"setuid-root binary (no-new-privileges)", []string{"exec", "/suid/probe", "whoami"}},
		{"host service on 0.0.0.0 via the gateway", []string{"tcp", fmt.Sprintf("gw:%d", hostPort)}},
		{"host sshd port on the gateway", []string{"tcp", "gw:22"}},
		{"host address on the fake-internet link", []string{"tcp", netip.AddrPortFrom(e.inet.HostAddr, uint16(hostPort)).String()}},
		{"gateway port 53 with no DNS running (fail closed)", []string{"dns", "gw:53", "web.test"}},
		{"gateway port 3128 with no proxy running (fail closed)", []string{"tcp", "gw:3128"}},
	}
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					e.mustFail(t, rt.name, tc.name, runOpts{}, tc.args...)
				})
			}
			t.Run("allowed: loopback inside the sandbox", func(t *testing.T) {
				// Sanity: the probe and the sandbox's own loopback work.
				e.mustWork(t, rt.name, "loopback inside the sandbox", runOpts{}, "whoami-ok")
			})
		})
	}
	select {
	case h := <-hostHits:
		t.Errorf("host service on 0.0.0.0 was reached from %s", h)
	default:
	}
	e.noDirectTraffic(t)
	if c := e.inet.Caught(); len(c) != 0 {
		t.Errorf("catcher recorded %v", c)
	}
}

// TestResources: a fork bomb meets the pids limit and a memory bomb the
// memory limit; the host and later sandboxes are unaffected.
func TestResources(t *testing.T) {
	e := newEnv(t)
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			// runc: pids 64 from the policy. gVisor: the limit is raised to
			// sandbox.GVisorMinPids for its own tasks; its fork bomb may kill
			// its own sandbox, which is acceptable (design.md).
			n := "500"
			if rt.name == "gvisor" {
				n = "3000"
			}
			t.Run("fork bomb (pids limit)", func(t *testing.T) {
				code, out := e.run(t, rt.name, runOpts{timeout: 90 * time.Second}, "forkbomb", n)
				// runc: the pids limit refuses the fork (EAGAIN) well before n.
				// gVisor: the sandbox may be killed instead (exit 137).
				ok := strings.Contains(out, "resource temporarily unavailable") || (rt.name == "gvisor" && code == 137)
				if code == 0 || !ok {
					e.results.add(rt.name, "fork bomb (pids limit)", "ESCAPED")
					t.Errorf("fork bomb not stopped by the pids limit (exit %d):\n%s", code, out)
				} else {
					e.results.add(rt.name, "fork bomb (pids limit)", "blocked")
				}
			})
			t.Run("memory bomb (memory limit)", func(t *testing.T) {
				// 128MiB limit; ask for 1GiB: the OOM killer ends it (SIGKILL).
				code, out := e.run(t, rt.name, runOpts{timeout: 60 * time.Second}, "membomb", "1024")
				if code != 137 {
					e.results.add(rt.name, "memory bomb (memory limit)", "ESCAPED")
					t.Errorf("memory bomb not OOM-killed (exit %d):\n%s", code, out)
				} else {
					e.results.add(rt.name, "memory bomb (memory limit)", "blocked")
				}
			})
			t.Run("a sandbox still starts afterwards", func(t *testing.T) {
				e.mustWork(t, rt.name, "sandbox starts after the bombs", runOpts{}, "whoami-ok")
			})
		})
	}
}

// TestCustomRootfs runs the probe on a nearly empty root directory
// (sandbox.rootfs: DIR) instead of the host's: the generated resolv.conf and
// hosts are bound over the rootfs's own, and the allowed path works.
func TestCustomRootfs(t *testing.T) {
	e := newEnv(t)
	root := t.TempDir()
	os.Chmod(root, 0o755)
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"resolv.conf", "hosts", "hostname"} {
		if err := os.WriteFile(filepath.Join(root, "etc", f), []byte("# placeholder\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := policy.Parse("rootfs.yaml", []byte(policyYAML+"  rootfs: "+root+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			o := runOpts{services: true, pol: p}
			e.mustWork(t, rt.name, "custom rootfs: DNS and HTTP through the gateway", o, "http", "http://web.test/rootfs", "-noproxy")
			e.mustFail(t, rt.name, "custom rootfs: direct TCP", o, "tcp", netip.AddrPortFrom(e.inet.Catcher, 7777).String())
		})
	}
	e.noDirectTraffic(t)
}
