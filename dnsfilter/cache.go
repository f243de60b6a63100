package dnsfilter

import (
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultCacheSize bounds the answer cache when Config.CacheSize is 0.
const DefaultCacheSize = 4096

type cacheKey struct {
	name  string // normalized: lower case, no trailing dot
	qtype uint16
}

// cached is an upstream answer as it arrived (filtered to the records the
// filter may serve), before the policy is applied: the policy is applied on
// every hit, so a reload takes effect without flushing.
type cached struct {
	rcode   int
	answer  []dns.RR
	stored  time.Time
	expires time.Time
}

// remaining is the TTL left at now, in whole seconds, at least 0.
func (c *cached) remaining(now time.Time) uint32 {
	d := c.expires.Sub(now)
	if d <= 0 {
		return 0
	}
	return uint32((d + time.Second - 1) / time.Second)
}

// cache is a bounded map of answers. Eviction drops expired entries first,
// then arbitrary ones (Go's randomized map order), which is cheap and good
// enough for a per-sandbox working set.
type cache struct {
	mu   sync.RWMutex
	m    map[cacheKey]*cached
	size int
}

func newCache(size int) *cache {
	return &cache{m: make(map[cacheKey]*cached), size: size}
}

func (c *cache) get(k cacheKey, now time.Time) *cached {
	c.mu.RLock()
	e := c.m[k]
	c.mu.RUnlock()
	if e == nil || !now.Before(e.expires) {
		return nil
	}
	return e
}

func (c *cache) put(k cacheKey, e *cached, now time.Time) {
	if c.size <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.size {
		for kk, v := range c.m {
			if !now.Before(v.expires) {
				delete(c.m, kk)
			}
		}
		// Still full: make room for about 1/16 of the size at once, so a
		// full cache does not pay a map walk on every insert.
		if len(c.m) >= c.size {
			n := max(1, c.size/16)
			for kk := range c.m {
				if n == 0 {
					break
				}
				delete(c.m, kk)
				n--
			}
		}
	}
	c.m[k] = e
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
