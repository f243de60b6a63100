package netsetup

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCreateExistsDelete(t *testing.T) {
	testutil.RequireRoot(t)
	name := fmt.Sprintf("cagent-nstest-%d", os.Getpid())
	if err := Create(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Delete(name) })
	if !Exists(name) {
		t.Fatal("namespace missing after Create")
	}
	// A second Create of the same name is ErrExists and must leave the
	// first one alone (it belongs to someone else).
	if err := Create(name); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	if !Exists(name) {
		t.Fatal("a failed Create removed the existing namespace")
	}
	// Inside: lo up, IPv6 off, no other interface, no route.
	err := Do(name, func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
			return fmt.Errorf("interfaces %v", ifs)
		}
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
		if err != nil || strings.TrimSpace(string(b)) != "1" {
			return fmt.Errorf("disable_ipv6 = %q %v", b, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Do leaves the caller's namespace untouched.
	if _, err := net.InterfaceByName("lo"); err != nil {
		t.Fatal(err)
	}
	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if Exists(name) {
		t.Fatal("namespace left after Delete")
	}
	if err := Delete(name); err != nil {
		t.Errorf("Delete of a missing namespace: %v", err)
	}
}

func TestVethClaim(t *testing.T) {
	testutil.RequireRoot(t)
	ns := fmt.Sprintf("cagent-nstest-v-%d", os.Getpid())
	if err := Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Delete(ns) })
	host := fmt.Sprintf("cgnt%d", os.Getpid()%100000)
	v := Veth{HostName: host, PeerName: "eth0", NS: ns,
		HostAddr: netip.MustParsePrefix("10.209.254.249/30"), PeerAddr: netip.MustParsePrefix("10.209.254.250/30")}
	if err := v.Add(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { DeleteLink(host) })
	if err := v.Add(); !errors.Is(err, ErrExists) {
		t.Fatalf("second Add = %v, want ErrExists", err)
	}
	names, err := LinkNames()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range names {
		found = found || n == host
	}
	if !found {
		t.Fatalf("host end %s missing after a failed second Add", host)
	}
	if err := DeleteLink(host); err != nil {
		t.Fatal(err)
	}
	if err := DeleteLink(host); err != nil {
		t.Errorf("DeleteLink of a missing link: %v", err)
	}
}

// TestReleaseDestroysVethKeepsName: releasing a namespace destroys its veth
// pair (the kernel does it with the namespace) while the name stays claimed
// until Delete.
func TestReleaseDestroysVethKeepsName(t *testing.T) {
	testutil.RequireRoot(t)
	name := fmt.Sprintf("cagent-reltest-%d", os.Getpid())
	host := fmt.Sprintf("cgrel%d", os.Getpid()%100000)
	if err := Create(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { DeleteLink(host); Delete(name) })
	v := Veth{HostName: host, PeerName: "eth0", NS: name,
		HostAddr: netip.MustParsePrefix("10.209.253.1/30"), PeerAddr: netip.MustParsePrefix("10.209.253.2/30")}
	if err := v.Add(); err != nil {
		t.Fatal(err)
	}
	if gone, err := WaitGone(host, 0); gone || err != nil {
		t.Fatalf("WaitGone before Release = %v, %v; want false", gone, err)
	}
	if err := Release(name); err != nil {
		t.Fatal(err)
	}
	if err := Create(name); !errors.Is(err, ErrExists) {
		t.Fatalf("Create after Release = %v, want ErrExists (the name stays claimed)", err)
	}
	if gone, err := WaitGone(host, 5*time.Second); !gone || err != nil {
		t.Fatalf("veth %s still there after Release: %v", host, err)
	}
	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if Exists(name) {
		t.Fatal("name still claimed after Delete")
	}
}
