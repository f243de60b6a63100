// Package ratelimit keeps per-key token buckets (per policy domain for the
// proxy, per client for the DNS filter) with an injectable clock.
//
// Memory stays bounded: a bucket that has refilled is indistinguishable from a
// new one, so idle full buckets are dropped by a sweep (every minute, or when
// the map doubles), and a hard cap (DefaultMaxKeys) drops arbitrary buckets
// if that is still not enough.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/policy"
	"golang.org/x/time/rate"
)

const (
	// sweepEvery is how often (in clock time) idle full buckets are dropped.
	sweepEvery = time.Minute
	// minSweepLen is the map size below which size-triggered sweeps are skipped.
	minSweepLen = 1024
	// DefaultMaxKeys is a hard cap on buckets held, whatever their level.
	DefaultMaxKeys = 100000
)

type bucket struct {
	lim   *rate.Limiter
	rpm   float64
	burst int
}

// Limiter holds one token bucket per key. It is safe for concurrent use.
type Limiter struct {
	clock func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
	sweepLen  int // sweep when the map grows past this
	maxKeys   int
}

// New returns an empty Limiter. clock may be nil (time.Now).
func New(clock func() time.Time) *Limiter {
	if clock == nil {
		clock = time.Now
	}
	return &Limiter{clock: clock, buckets: make(map[string]*bucket), sweepLen: minSweepLen, maxKeys: DefaultMaxKeys}
}

// SetMaxKeys changes the hard cap on buckets held (n >= 1). Call it before use.
func (l *Limiter) SetMaxKeys(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxKeys = max(1, n)
	l.sweepLen = min(l.sweepLen, l.maxKeys)
}

func params(rl *policy.RateLimit) (rate.Limit, int) {
	burst := rl.BurstSize
	if burst < 1 {
		// What policy validation fills in when burst_size is omitted.
		burst = max(1, int(rl.RequestsPerMinute/6))
	}
	return rate.Limit(rl.RequestsPerMinute / 60), burst
}

// Allow takes one token from key's bucket. rl nil means unlimited. When the
// policy's values for key change (a reload) the bucket takes the new rate
// and size but keeps its current level, so a reload hands out no free burst.
// A rate <= 0 (never valid policy) denies everything: fail closed.
// retryAfter is rounded up to whole seconds and is at least 1s.
func (l *Limiter) Allow(key string, rl *policy.RateLimit) (ok bool, retryAfter time.Duration) {
	if rl == nil {
		return true, 0
	}
	if rl.RequestsPerMinute <= 0 || math.IsNaN(rl.RequestsPerMinute) {
		return false, time.Minute
	}
	now := l.clock()
	limit, burst := params(rl)

	l.mu.Lock()
	b := l.buckets[key]
	switch {
	case b == nil:
		b = &bucket{lim: rate.NewLimiter(limit, burst), rpm: rl.RequestsPerMinute, burst: burst}
		if len(l.buckets) >= l.sweepLen {
			l.sweepLocked(now) // before inserting: the new bucket is full
		}
		l.buckets[key] = b
	case b.rpm != rl.RequestsPerMinute || b.burst != burst:
		b.lim.SetLimitAt(now, limit)
		b.lim.SetBurstAt(now, burst)
		b.rpm, b.burst = rl.RequestsPerMinute, burst
	}
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweepLocked(now)
		l.buckets[key] = b // the sweep may have dropped it while full
	}
	// Taken under l.mu so a concurrent sweep cannot drop the bucket between
	// lookup and take (which would hand out an extra token).
	allowed := b.lim.AllowN(now, 1)
	var tokens float64
	if !allowed {
		tokens = b.lim.TokensAt(now)
	}
	l.mu.Unlock()

	if allowed {
		return true, 0
	}
	// Time until one whole token has accumulated.
	need := 1 - tokens
	wait := time.Duration(need / float64(limit) * float64(time.Second))
	if wait < time.Second {
		return false, time.Second
	}
	return false, (wait + time.Second - 1).Truncate(time.Second)
}

// sweepLocked drops buckets that have refilled: a fresh bucket would be
// identical, so forgetting them is free and bounds memory to active keys.
func (l *Limiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.lim.TokensAt(now) >= float64(b.burst) {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.maxKeys {
		// Every bucket is in use and there are too many keys: drop an
		// arbitrary eighth (map order is random). Those keys get a fresh
		// bucket: a bounded over-allowance only under extreme key counts,
		// preferred to unbounded memory.
		drop := max(1, len(l.buckets)/8)
		for k := range l.buckets {
			if drop == 0 {
				break
			}
			delete(l.buckets, k)
			drop--
		}
	}
	l.sweepLen = min(l.maxKeys, max(minSweepLen, 2*len(l.buckets)))
}

// Levels returns the tokens available now per key (for metrics).
func (l *Limiter) Levels() map[string]float64 {
	now := l.clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]float64, len(l.buckets))
	for k, b := range l.buckets {
		out[k] = b.lim.TokensAt(now)
	}
	return out
}

// Forget drops the buckets of keys for which keep returns false (keys no
// longer in the policy).
func (l *Limiter) Forget(keep func(key string) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.buckets {
		if !keep(k) {
			delete(l.buckets, k)
		}
	}
}

// Len returns the number of buckets held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
