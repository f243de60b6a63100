package proxy

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/resolver"
)

// dnsCacheMax bounds the names cached per policy state. Only names the
// proxy dials are looked up (allowed names, and in report mode what the
// agent asks for), so this is a memory bound, not a working-set size.
const dnsCacheMax = 4096

// dnsCache keeps resolved addresses per name for the answer's TTL, capped by
// the policy's dns.cache_ttl, so that each CONNECT or new upstream
// connection does not wait for a DNS round trip. It caches answers, not
// decisions: every dial still checks the addresses (checkAddrs) and dials
// exactly what it checked. Failures are not cached. Each policy state has
// its own cache, so a reload (new DNS servers, new allow_private) starts empty.
type dnsCache struct {
	res    *resolver.Resolver
	maxTTL time.Duration
	clock  func() time.Time

	mu sync.Mutex
	m  map[string]dnsAnswer
}

type dnsAnswer struct {
	addrs   []netip.Addr // never modified once stored
	expires time.Time
}

func newDNSCache(res *resolver.Resolver, maxTTL time.Duration, clock func() time.Time) *dnsCache {
	return &dnsCache{res: res, maxTTL: maxTTL, clock: clock, m: map[string]dnsAnswer{}}
}

// lookup returns host's addresses, from the cache while they are fresh. The
// slice must not be modified.
func (c *dnsCache) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	now := c.clock()
	c.mu.Lock()
	a, ok := c.m[host]
	c.mu.Unlock()
	if ok && now.Before(a.expires) {
		return a.addrs, nil
	}
	addrs, ttl, err := c.res.LookupAddrsTTL(ctx, host)
	if err != nil {
		return nil, err
	}
	if ttl = min(ttl, c.maxTTL); ttl > 0 {
		c.mu.Lock()
		if len(c.m) >= dnsCacheMax {
			c.evictLocked(now)
		}
		c.m[host] = dnsAnswer{addrs: addrs, expires: now.Add(ttl)}
		c.mu.Unlock()
	}
	return addrs, nil
}

// evictLocked drops expired answers, and if none had expired, an arbitrary
// half of the rest.
func (c *dnsCache) evictLocked(now time.Time) {
	for k, a := range c.m {
		if !now.Before(a.expires) {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) < dnsCacheMax/2 {
			break
		}
		delete(c.m, k)
	}
}
