package proxy

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestDNSCache(t *testing.T) {
	raw := tcpEcho(t)
	clock := &stepClock{t: time.Now()}
	yaml := withPort(`
dns: {cache_ttl: 40s}
domains:
  - domain: cached.test
    ports: [{RAW}]
    allow_private: true
  - domain: late.test
    ports: [{RAW}]
    allow_private: true
`, raw)
	e := newEnv(t, yaml, func(c *Config) { c.Clock = clock.now })
	e.dns.mu.Lock()
	e.dns.ttl = 60
	e.dns.mu.Unlock()
	connect := func(host string) int {
		t.Helper()
		c, resp := e.rawConnect(fmt.Sprintf("%s:%d", host, raw))
		defer c.Close()
		if resp.StatusCode == 200 {
			if err := roundTrip(t, c, "ping"); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	steps := []struct {
		name    string
		advance time.Duration
		host    string
		status  int
		lookups int // A queries for host so far
	}{
		{"first connect resolves", 0, "cached.test", 200, 1},
		{"second connect uses the answer", 0, "cached.test", 200, 1},
		{"still fresh", 39 * time.Second, "cached.test", 200, 1},
		{"dns.cache_ttl caps the 60s TTL", 2 * time.Second, "cached.test", 200, 2},
		{"a failure is not cached", 0, "late.test", 502, 1},
	}
	e.dns.mu.Lock()
	e.dns.answers["late.test."] = nil // NOERROR, no address
	e.dns.mu.Unlock()
	for _, s := range steps {
		clock.add(s.advance)
		if got := connect(s.host); got != s.status {
			t.Fatalf("%s: status %d, want %d", s.name, got, s.status)
		}
		if n := e.dns.count(s.host); n != s.lookups {
			t.Fatalf("%s: %d lookups of %s, want %d", s.name, n, s.host, s.lookups)
		}
	}
	e.dns.set("late.test", "127.0.0.1")
	if got := connect("late.test"); got != 200 || e.dns.count("late.test") != 2 {
		t.Fatalf("after the name appeared: status %d, %d lookups", got, e.dns.count("late.test"))
	}

	// A reload starts with an empty cache, and a cached answer never
	// bypasses the address check: without allow_private the same loopback
	// answer is refused.
	e.p.SetPolicy(e.policy(withPort(`
dns: {cache_ttl: 40s}
domains:
  - domain: cached.test
    ports: [{RAW}]
`, raw)))
	before := e.dns.count("cached.test")
	c, resp := e.rawConnect(fmt.Sprintf("cached.test:%d", raw))
	c.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Cagent-Deny-Reason") != codeForbidden {
		t.Fatalf("after reload: status %d %s", resp.StatusCode, resp.Header.Get("X-Cagent-Deny-Reason"))
	}
	if e.dns.count("cached.test") != before+1 {
		t.Fatal("a reload kept the old policy's DNS answers")
	}
}

func TestDNSCacheBounded(t *testing.T) {
	clock := &stepClock{t: time.Now()}
	c := newDNSCache(nil, time.Minute, clock.now)
	for i := 0; i < 3*dnsCacheMax; i++ {
		c.mu.Lock()
		if len(c.m) >= dnsCacheMax {
			c.evictLocked(clock.now())
		}
		c.m[fmt.Sprint(i)] = dnsAnswer{addrs: []netip.Addr{netip.MustParseAddr("10.210.0.1")}, expires: clock.now().Add(time.Minute)}
		c.mu.Unlock()
	}
	if n := len(c.m); n > dnsCacheMax {
		t.Fatalf("%d names cached, bound %d", n, dnsCacheMax)
	}
}
