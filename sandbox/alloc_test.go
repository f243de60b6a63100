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

func TestIsInitOf(t *testing.T) {
	status := func(ppid, nspid string) []byte {
		return []byte("Name:\ttrue\nState:\tZ (zombie)\nTgid:\t4242\nPid:\t4242\nPPid:\t" + ppid + "\nNSpid:\t" + nspid + "\n")
	}
	for _, tc := range []struct {
		name   string
		status []byte
		ppid   int
		want   bool
	}{
		{"container init", status("100", "4242\t1"), 100, true},
		{"nested namespaces", status("100", "4242\t77\t1"), 100, true},
		{"other parent", status("101", "4242\t1"), 100, false},
		{"not a namespace init", status("100", "4242\t2"), 100, false},
		{"host process", status("100", "4242"), 100, false},
		{"no NSpid line", []byte("PPid:\t100\n"), 100, false},
		{"empty", nil, 100, false},
		{"parent prefix only", status("1000", "4242\t1"), 100, false},
	} {
		if got := isInitOf(tc.status, tc.ppid); got != tc.want {
			t.Errorf("%s: isInitOf = %v, want %v", tc.name, got, tc.want)
		}
	}
}
