package oci

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestSeccompProfile(t *testing.T) {
	s := Seccomp()
	if s.DefaultAction != specs.ActErrno || s.DefaultErrnoRet == nil || *s.DefaultErrnoRet != uint(unix.EPERM) {
		t.Fatalf("default action %v: want errno EPERM (default deny)", s.DefaultAction)
	}
	allowedNames := map[string]bool{}
	for _, r := range s.Syscalls {
		if r.Action != specs.ActAllow {
			continue
		}
		for _, n := range r.Names {
			if len(r.Args) == 0 {
				allowedNames[n] = true
			}
		}
	}
	// Design.md section 3: never allowed, unconditionally or otherwise.
	for _, n := range []string{"io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "bpf", "keyctl",
		"add_key", "request_key", "mount", "umount2", "unshare", "setns", "perf_event_open", "pivot_root", "chroot",
		"process_vm_readv", "process_vm_writev", "kexec_load", "init_module", "finit_module", "userfaultfd",
		"open_by_handle_at", "clone3", "socket", "clone"} {
		if allowedNames[n] {
			t.Errorf("%s is allowed unconditionally", n)
		}
	}
	// socket(2): exactly AF_UNIX, AF_INET, AF_NETLINK.
	var fams []uint64
	for _, r := range s.Syscalls {
		if slices.Contains(r.Names, "socket") {
			if r.Action != specs.ActAllow || len(r.Args) != 1 || r.Args[0].Index != 0 || r.Args[0].Op != specs.OpEqualTo {
				t.Fatalf("socket rule %+v", r)
			}
			fams = append(fams, r.Args[0].Value)
		}
	}
	slices.Sort(fams)
	if want := []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_NETLINK}; !slices.Equal(fams, want) {
		t.Errorf("socket families %v, want %v (no AF_INET6, AF_PACKET)", fams, want)
	}
	// clone(2) only without namespace flags.
	for _, r := range s.Syscalls {
		if slices.Contains(r.Names, "clone") {
			if len(r.Args) != 1 || r.Args[0].Op != specs.OpMaskedEqual || r.Args[0].Value&unix.CLONE_NEWUSER == 0 || r.Args[0].ValueTwo != 0 {
				t.Errorf("clone rule %+v", r)
			}
		}
	}
	for _, n := range allowed {
		if strings.HasPrefix(n, "io_uring") {
			t.Errorf("%s in allowlist", n)
		}
	}
}

func TestWriteHostRootfs(t *testing.T) {
	dir := t.TempDir()
	ws := t.TempDir()
	_, err := Write(dir, Config{Args: []string{"/bin/true"}, UID: 1000, GID: 1000, HostRootfs: true, Hostname: "h",
		Workspace: ws, NetNSPath: "/var/run/netns/x", CgroupsPath: "/cagent/x", CPUs: 1.5, Memory: 64 << 20, Pids: 99,
		Files: []Bind{{Source: "/dev/null", Dest: "/etc/resolv.conf"}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if !p.NoNewPrivileges || p.User.UID != 1000 {
		t.Errorf("process %+v", p)
	}
	c := p.Capabilities
	if c == nil || len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Errorf("capabilities not all dropped: %+v", c)
	}
	if !s.Root.Readonly {
		t.Error("root is writable")
	}
	var netns string
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			netns = ns.Path
		}
	}
	if netns != "/var/run/netns/x" {
		t.Errorf("network namespace path %q", netns)
	}
	r := s.Linux.Resources
	if *r.Pids.Limit != 99 || *r.Memory.Limit != 64<<20 || *r.CPU.Quota != 150000 || *r.CPU.Period != 100000 {
		t.Errorf("resources %+v", r)
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	if m := mounts["/tmp"]; m.Type != "tmpfs" || !slices.Contains(m.Options, "mode=1777") {
		t.Errorf("/tmp mount %+v", m)
	}
	if m := mounts["/workspace"]; m.Source != ws || !slices.Contains(m.Options, "rw") || !slices.Contains(m.Options, "nosuid") {
		t.Errorf("/workspace mount %+v", m)
	}
	if m := mounts["/etc/resolv.conf"]; !slices.Contains(m.Options, "ro") {
		t.Errorf("resolv.conf mount %+v", m)
	}
	if m, ok := mounts["/usr"]; !ok || !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "nosuid") {
		t.Errorf("/usr mount %+v", m)
	}
	// Merged-/usr symlinks are recreated, not bound.
	if fi, err := os.Lstat("/bin"); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if _, err := os.Readlink(filepath.Join(dir, "rootfs", "bin")); err != nil {
			t.Errorf("/bin symlink not recreated: %v", err)
		}
	}
}

func TestWriteNeedsCommand(t *testing.T) {
	if _, err := Write(t.TempDir(), Config{}); err == nil {
		t.Fatal("no error for an empty command")
	}
}
