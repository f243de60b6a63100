package dnsfilter

import (
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultCacheSize bounds the answer cache when Config.CacheSize is 0.
const DefaultCacheSize = 4096

// cacheBytes bounds the estimated memory of the cached answers (entryCost),
// besides their number: ~850 typical answers (one or two records, ~300
// bytes each). It is what keeps the filter's live heap small enough for its
// memory limit (DefaultMemoryLimit) to leave the collector room: with a
// 1 MiB bound (4096 typical answers) a flood of new names made it collect
// every few hundred kilobytes allocated and halved the uncached QPS, with
// 256 KiB the uncached QPS was 0.7x that without a limit, RSS 18.1 MB
// instead of 24.5 MB. It also bounds large answers: one may carry hundreds
// of records (up to 64 KiB over TCP); one costing more than 1/16 of the
// bound is served but not cached.
const cacheBytes = 256 << 10

// Estimated heap bytes of a cache entry beyond its strings and records (map
// slot, key, cached struct, answer slice) and of one record beyond its
// owner name and data (the RR struct and its interface slot).
const (
	cacheEntryOverhead = 160
	cacheRROverhead    = 80
)

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
	cost    int // entryCost, set by put
}

// entryCost estimates the heap bytes the entry keeps alive.
func entryCost(k cacheKey, e *cached) int {
	n := cacheEntryOverhead + len(k.name)
	for _, rr := range e.answer {
		n += cacheRROverhead + len(rr.Header().Name)
		switch r := rr.(type) {
		case *dns.A:
			n += len(r.A)
		case *dns.CNAME:
			n += len(r.Target)
		}
	}
	return n
}

// remaining is the TTL left at now, in whole seconds, at least 0.
func (c *cached) remaining(now time.Time) uint32 {
	d := c.expires.Sub(now)
	if d <= 0 {
		return 0
	}
	return uint32((d + time.Second - 1) / time.Second)
}

// cache is a map of answers bounded by count and by estimated bytes.
// Eviction drops expired entries first, then arbitrary ones (Go's
// randomized map order), which is cheap and good enough for a per-sandbox
// working set.
type cache struct {
	mu       sync.RWMutex
	m        map[cacheKey]*cached
	size     int
	maxBytes int
	bytes    int
}

func newCache(size, maxBytes int) *cache {
	return &cache{m: make(map[cacheKey]*cached), size: size, maxBytes: maxBytes}
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
	e.cost = entryCost(k, e)
	if e.cost > c.maxBytes/16 {
		return // served, not cached: see cacheBytes
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[k]; ok {
		c.bytes -= old.cost
		delete(c.m, k)
	}
	if len(c.m) >= c.size || c.bytes+e.cost > c.maxBytes {
		for kk, v := range c.m {
			if !now.Before(v.expires) {
				c.bytes -= v.cost
				delete(c.m, kk)
			}
		}
		// Still full: make room for about 1/16 of the bounds at once, so a
		// full cache does not pay a map walk on every insert.
		if len(c.m) >= c.size || c.bytes+e.cost > c.maxBytes {
			for kk, v := range c.m {
				if len(c.m) < c.size-c.size/16 && c.bytes+e.cost <= c.maxBytes-c.maxBytes/16 {
					break
				}
				c.bytes -= v.cost
				delete(c.m, kk)
			}
		}
	}
	c.m[k] = e
	c.bytes += e.cost
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
