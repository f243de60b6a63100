package api

import (
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the throttling of failed token attempts.
const (
	DefaultAuthFailLimit  = 20          // failed attempts per source per window
	DefaultAuthFailWindow = time.Minute // fixed window
	DefaultAuthFailTrack  = 1 << 16     // sources counted per window (bounds memory)
)

// failCounter counts failed token attempts per source in fixed windows.
// A source is an IPv4 address or an IPv6 /64 (one host usually holds a
// whole /64, so counting single IPv6 addresses would let it rotate
// through them). Past limit failures in a window, every token attempt
// from the source is refused until the window ends, before the token is
// looked up: the answer then says nothing about the token, and a guesser
// costs no database query.
//
// Memory is bounded: at most track sources are counted per window, and
// the whole table is dropped when the window ends. When it is full, new
// sources are not counted (fail open): a client with more addresses than
// that per window is not stopped by per-address counting anyway, and
// refusing everyone new would let such a client lock out all others.
type failCounter struct {
	limit  int
	window time.Duration
	track  int

	mu     sync.Mutex
	start  time.Time
	counts map[netip.Prefix]int
}

func newFailCounter(limit int, window time.Duration, track int) *failCounter {
	return &failCounter{limit: limit, window: window, track: track, counts: map[netip.Prefix]int{}}
}

// source is the key an address is counted under.
func source(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	} else if !a.IsValid() {
		return netip.Prefix{}
	}
	p, _ := a.Prefix(bits)
	return p
}

// roll starts a new window when the current one is over. Call with mu held.
func (f *failCounter) roll(now time.Time) {
	if now.Sub(f.start) >= f.window || now.Before(f.start) {
		f.start = now.Truncate(f.window)
		if len(f.counts) > 0 {
			f.counts = map[netip.Prefix]int{}
		}
	}
}

// blocked returns how long a is still refused, or 0.
func (f *failCounter) blocked(a netip.Addr, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll(now)
	if f.counts[source(a)] < f.limit {
		return 0
	}
	return f.start.Add(f.window).Sub(now)
}

// fail counts a failed attempt from a and reports whether that reached the limit.
func (f *failCounter) fail(a netip.Addr, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll(now)
	k := source(a)
	n, ok := f.counts[k]
	if !ok && len(f.counts) >= f.track {
		return false
	}
	f.counts[k] = n + 1
	return n+1 == f.limit
}

// authn authenticates the request of c, counting a failed attempt against
// the client's address and refusing addresses past their limit (429). A
// request without an Authorization header is no attempt: it is neither
// refused nor counted.
func (s *Server) authn(c *call) (Principal, error) {
	if s.fails == nil || c.r.Header.Get("Authorization") == "" {
		return s.authenticate(c.r.Context(), c.r)
	}
	now := s.cfg.Now()
	if wait := s.fails.blocked(c.client, now); wait > 0 {
		return Principal{}, &apiError{status: http.StatusTooManyRequests, code: "rate_limited",
			msg: "too many failed token attempts from this address; retry later", retry: wait}
	}
	p, err := s.authenticate(c.r.Context(), c.r)
	if errors.Is(err, errUnauthorized) && s.fails.fail(c.client, now) {
		s.log.Warn("failed token attempts: address throttled", "client", source(c.client).String(),
			"failures", s.cfg.AuthFailLimit, "window", s.cfg.AuthFailWindow, "request_id", c.rid)
	}
	return p, err
}
