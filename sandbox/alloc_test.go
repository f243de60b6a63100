package sandbox

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
)

// TestAllocateExhaustion: a /29 pool holds two /30 sandboxes; the third is
// refused with a message that says what to do.
func TestAllocateExhaustion(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "sandbox")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A /29 of 10.209.253.0/24 picked by pid, so that concurrent test
	// processes (other checkouts) rarely share one.
	pool := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 209, 253, byte(8 * (os.Getpid() % 32))}), 29)
	var got []*lease
	t.Cleanup(func() {
		for _, l := range got {
			netsetup.Delete(l.netns())
			removeLease(dir, l)
		}
	})
	for range 2 {
		l := &lease{PID: os.Getpid(), StateDir: dir}
		if err := allocate(dir, pool, l); err != nil {
			t.Fatal(err)
		}
		got = append(got, l)
		if !pool.Contains(l.Gateway) || !pool.Contains(l.Addr) || l.Addr != l.Gateway.Next() {
			t.Errorf("lease %+v outside %s", l, pool)
		}
		if _, err := os.Stat(filepath.Join(RegistryDir, l.ID+".json")); err != nil {
			t.Errorf("no registry entry: %v", err)
		}
	}
	if got[0].ID == got[1].ID {
		t.Fatalf("same subnet twice: %s", got[0].ID)
	}
	err := allocate(dir, pool, &lease{PID: os.Getpid()})
	if err == nil || !strings.Contains(err.Error(), "exhausted") || !strings.Contains(err.Error(), "cagent gc") {
		t.Fatalf("third allocate = %v, want the exhaustion error", err)
	}
	// Freeing one makes it available again.
	netsetup.Delete(got[1].netns())
	removeLease(dir, got[1])
	l := &lease{PID: os.Getpid()}
	if err := allocate(dir, pool, l); err != nil || l.ID != got[1].ID {
		t.Fatalf("re-allocate = %v, %s; want %s", err, l.ID, got[1].ID)
	}
	got[1] = l
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{{"0ad10000", true}, {"0AD1FFFF", true}, {"", false}, {"0ad1000", false}, {"../../x", false}, {"0ad1000g", false}, {"0ad100000", false}} {
		if validID(tc.id) != tc.ok {
			t.Errorf("validID(%q) = %v", tc.id, !tc.ok)
		}
	}
}
