package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup builds a namespace joined by a veth on a free /30 of
// 10.209.255.0/24. The namespace name (from the /30) is the claim, so
// concurrent test processes never share a subnet.
func setup(t *testing.T) (ns string, v netsetup.Veth) {
	t.Helper()
	testutil.RequireRoot(t)
	for i := 0; i < 64; i++ {
		base := netip.AddrFrom4([4]byte{10, 209, 255, byte(4 * i)})
		ns = fmt.Sprintf("cagent-fwtest-%d", i)
		err := netsetup.Create(ns)
		if errors.Is(err, netsetup.ErrExists) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netsetup.Delete(ns) })
		v = netsetup.Veth{HostName: fmt.Sprintf("cgfw%02d", i), PeerName: "eth0", NS: ns,
			HostAddr: netip.PrefixFrom(base.Next(), 30), PeerAddr: netip.PrefixFrom(base.Next().Next(), 30)}
		if err := v.Add(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netsetup.DeleteLink(v.HostName) })
		if err := v.WaitUp(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		return ns, v
	}
	t.Fatal("no free /30 in 10.209.255.0/24")
	return "", v
}

func listen(t *testing.T, addr string) {
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func dialFrom(ns, addr string) error {
	return netsetup.Do(ns, func() error {
		c, err := net.DialTimeout("tcp4", addr, 700*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// TestHostTableAlone proves the shared host table holds by itself (with no
// rules inside the namespace): only the gateway's service ports answer, a
// second sandbox's gateway is out of reach, and the table stays while held
// and goes with RemoveIfUnused once it is not.
func TestHostTableAlone(t *testing.T) {
	ns, v := setup(t)
	_, v2 := setup(t)
	gw := v.HostAddr.Addr()
	// A private table and prefix (this test's veths only), so that the test
	// neither depends on nor disturbs the real one.
	h := Host{Table: "cagent_fwtest_" + v.HostName, IfPrefix: v.HostName, LockDir: t.TempDir()}
	t.Cleanup(func() { h.RemoveIfUnused(nil) })
	// Before: a host service on 0.0.0.0 is reachable through the veth.
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	hostSvc := fmt.Sprintf("%s:%d", gw, port)
	if err := dialFrom(ns, hostSvc); err != nil {
		t.Fatalf("before the rules the host service should be reachable (test is vacuous): %v", err)
	}
	listen(t, fmt.Sprintf("%s:3128", gw))
	// Another sandbox's gateway, a host address too: routed through this
	// sandbox's gateway (a sandbox has no such route, but the host table
	// must not rely on that).
	other := fmt.Sprintf("%s:3128", v2.HostAddr.Addr())
	listen(t, other)
	err = netsetup.Do(ns, func() error {
		link, err := netlink.LinkByName(v.PeerName)
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index,
			Dst: &net.IPNet{IP: v2.HostAddr.Masked().Addr().AsSlice(), Mask: net.CIDRMask(30, 32)}, Gw: gw.AsSlice()})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(ns, other); err != nil {
		t.Fatalf("before the rules the other gateway should be reachable (test is vacuous): %v", err)
	}
	release, err := h.Hold()
	if err != nil {
		t.Fatal(err)
	}
	// A second hold finds the table and adds nothing.
	release2, err := h.Hold()
	if err != nil {
		t.Fatal(err)
	}
	release2()
	if err := dialFrom(ns, hostSvc); err == nil {
		t.Errorf("host service on 0.0.0.0 reachable through the gateway despite the host table")
	}
	if err := dialFrom(ns, other); err == nil {
		t.Errorf("another sandbox's gateway reachable despite the host table")
	}
	if err := dialFrom(ns, fmt.Sprintf("%s:3128", gw)); err != nil {
		t.Errorf("gateway proxy port blocked: %v", err)
	}
	if gone, err := h.RemoveIfUnused(nil); gone || err != nil {
		t.Errorf("RemoveIfUnused while held = %v, %v; want false, nil", gone, err)
	}
	release()
	if ok, err := h.Exists(); !ok || err != nil {
		t.Errorf("table gone after the last release (%v, %v): it should stay until RemoveIfUnused", ok, err)
	}
	if gone, err := h.RemoveIfUnused(func() (bool, error) { return true, nil }); gone || err != nil {
		t.Errorf("RemoveIfUnused with an interface in use = %v, %v; want false, nil", gone, err)
	}
	if gone, err := h.RemoveIfUnused(nil); !gone || err != nil {
		t.Fatalf("RemoveIfUnused = %v, %v; want true, nil", gone, err)
	}
	if gone, err := h.RemoveIfUnused(nil); !gone || err != nil {
		t.Errorf("second RemoveIfUnused = %v, %v; want true, nil", gone, err)
	}
	if err := dialFrom(ns, hostSvc); err != nil {
		t.Errorf("after removal the host service should be reachable again: %v", err)
	}
}

// TestInnerTableAlone proves the namespace's own table holds by itself.
func TestInnerTableAlone(t *testing.T) {
	ns, v := setup(t)
	gw := v.HostAddr.Addr()
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	hostSvc := fmt.Sprintf("%s:%d", gw, l.Addr().(*net.TCPAddr).Port)
	listen(t, fmt.Sprintf("%s:3128", gw))
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := Rules{Gateway: gw, SandboxNSFd: int(h)}
	if err := r.installInner(); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(ns, hostSvc); err == nil {
		t.Errorf("host service reachable despite the namespace's table")
	}
	if err := dialFrom(ns, fmt.Sprintf("%s:3128", gw)); err != nil {
		t.Errorf("gateway proxy port blocked: %v", err)
	}
}
