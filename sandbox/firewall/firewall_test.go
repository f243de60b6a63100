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
		v = netsetup.Veth{HostName: fmt.Sprintf("cgfw%d", i), PeerName: "eth0", NS: ns,
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

// TestHostTableAlone proves the host-side table holds by itself (with no
// rules inside the namespace): only the gateway's service ports answer.
func TestHostTableAlone(t *testing.T) {
	ns, v := setup(t)
	gw := v.HostAddr.Addr()
	r := Rules{ID: "fwtest" + v.HostName, HostIf: v.HostName, Gateway: gw}
	t.Cleanup(func() { RemoveHost(r.ID) })
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
	hostSvc := fmt.Sprintf("%s:%d", gw, l.Addr().(*net.TCPAddr).Port)
	if err := dialFrom(ns, hostSvc); err != nil {
		t.Fatalf("before the rules the host service should be reachable (test is vacuous): %v", err)
	}
	listen(t, fmt.Sprintf("%s:3128", gw))
	if err := r.installHost(); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(ns, hostSvc); err == nil {
		t.Errorf("host service on 0.0.0.0 reachable through the gateway despite the host table")
	}
	if err := dialFrom(ns, fmt.Sprintf("%s:3128", gw)); err != nil {
		t.Errorf("gateway proxy port blocked: %v", err)
	}
	ids, err := HostTables()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, id := range ids {
		found = found || id == r.ID
	}
	if !found {
		t.Errorf("HostTables() = %v, missing %s", ids, r.ID)
	}
	if err := RemoveHost(r.ID); err != nil {
		t.Fatal(err)
	}
	if err := RemoveHost(r.ID); err != nil {
		t.Errorf("second RemoveHost: %v", err)
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
