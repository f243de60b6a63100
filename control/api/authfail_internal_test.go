package api

import (
	"net/netip"
	"testing"
	"time"
)

func TestFailCounterSources(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"198.51.100.7", "198.51.100.7"},
		{"::ffff:198.51.100.7", "198.51.100.7"},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"fe80::1%eth0", "fe80::2%eth1"},
	} {
		if source(netip.MustParseAddr(c.a)) != source(netip.MustParseAddr(c.b)) {
			t.Errorf("%s and %s are counted apart", c.a, c.b)
		}
	}
	for _, c := range []struct{ a, b string }{
		{"198.51.100.7", "198.51.100.8"},
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
	} {
		if source(netip.MustParseAddr(c.a)) == source(netip.MustParseAddr(c.b)) {
			t.Errorf("%s and %s are counted together", c.a, c.b)
		}
	}
}

// TestFailCounterBounded: however many sources fail, the table holds at
// most track of them, is emptied when the window ends, and sources it
// could not count are not refused.
func TestFailCounterBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 30, 0, time.UTC)
	f := newFailCounter(2, time.Minute, 100)
	base := netip.MustParseAddr("10.0.0.0").As4()
	addr := func(i int) netip.Addr {
		b := base
		b[2], b[3] = byte(i>>8), byte(i)
		return netip.AddrFrom4(b)
	}
	for i := 0; i < 1000; i++ {
		f.fail(addr(i), now)
		f.fail(addr(i), now)
	}
	if len(f.counts) != 100 {
		t.Fatalf("%d sources tracked, want 100", len(f.counts))
	}
	if w := f.blocked(addr(5), now); w != 30*time.Second {
		t.Fatalf("tracked source: blocked for %v, want 30s", w)
	}
	if w := f.blocked(addr(500), now); w != 0 {
		t.Fatalf("untracked source refused for %v", w)
	}
	now = now.Add(30 * time.Second)
	if w := f.blocked(addr(5), now); w != 0 || len(f.counts) != 0 {
		t.Fatalf("new window: blocked %v, %d sources kept", w, len(f.counts))
	}
	// A clock stepping back starts a new window too.
	f.fail(addr(1), now)
	f.fail(addr(1), now)
	if f.blocked(addr(1), now.Add(-time.Hour)) != 0 {
		t.Fatal("clock stepped back: still refused")
	}
}
