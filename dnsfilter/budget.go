package dnsfilter

import (
	"container/list"
	"sync"
	"time"
)

// budgetWindow is the rolling window of the distinct-names budget.
const budgetWindow = time.Hour

// budgets counts, per client and registered domain, the distinct names asked
// for in the last hour. A name counts from its most recent query: it leaves
// the count one hour after it was last asked for. The count is exact (every
// name is kept, not sketched), so the budget is a precise promise.
type budgets struct {
	mu        sync.Mutex
	sets      map[budgetKey]*nameSet
	lastSweep time.Time
}

type budgetKey struct {
	client string
	domain string // registered domain
}

type nameSet struct {
	names map[string]*list.Element // name -> element of order
	order list.List                // of *seenName, least recently asked first
	// exhausted is set when a name was refused, so the one event that says
	// the budget ran out is emitted once per episode, not per query.
	exhausted bool
}

type seenName struct {
	name string
	at   time.Time
}

func newBudgets() *budgets { return &budgets{sets: map[budgetKey]*nameSet{}} }

// budgetResult is what admit decided.
type budgetResult struct {
	ok    bool
	first bool // this refusal started an exhaustion episode
	count int  // distinct names in the window, after this query
}

// admit records that client asked for name (under registered domain domain)
// at now. limit < 0 admits everything without recording. A name already in
// the window is always admitted; a new one only while fewer than limit names
// are in the window.
func (b *budgets) admit(client, domain, name string, limit int, now time.Time) budgetResult {
	return b.admitMark(client, domain, name, limit, now, true)
}

// admitMark is admit; with mark false a refusal leaves no trace (the fast
// path hands refusals to the full path, which reports them).
func (b *budgets) admitMark(client, domain, name string, limit int, now time.Time, mark bool) budgetResult {
	if limit < 0 {
		return budgetResult{ok: true}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.lastSweep) >= time.Minute {
		b.sweepLocked(now)
	}
	k := budgetKey{client, domain}
	s := b.sets[k]
	if s == nil {
		s = &nameSet{names: map[string]*list.Element{}}
		b.sets[k] = s
	}
	s.expire(now)
	if e := s.names[name]; e != nil {
		e.Value.(*seenName).at = now
		s.order.MoveToBack(e)
		return budgetResult{ok: true, count: len(s.names)}
	}
	if len(s.names) >= limit {
		if !mark {
			return budgetResult{ok: false, count: len(s.names)}
		}
		first := !s.exhausted
		s.exhausted = true
		return budgetResult{ok: false, first: first, count: len(s.names)}
	}
	s.names[name] = s.order.PushBack(&seenName{name: name, at: now})
	s.exhausted = false // room again: a later exhaustion is a new episode
	return budgetResult{ok: true, count: len(s.names)}
}

// expire drops names last asked for a window or more ago.
func (s *nameSet) expire(now time.Time) {
	for e := s.order.Front(); e != nil; e = s.order.Front() {
		sn := e.Value.(*seenName)
		if now.Sub(sn.at) < budgetWindow {
			break
		}
		s.order.Remove(e)
		delete(s.names, sn.name)
	}
}

// sweepLocked forgets sets whose names have all expired, bounding memory to
// the clients and domains active in the last hour.
func (b *budgets) sweepLocked(now time.Time) {
	b.lastSweep = now
	for k, s := range b.sets {
		s.expire(now)
		if len(s.names) == 0 {
			delete(b.sets, k)
		}
	}
}

// rearm re-arms the exhaustion event of sets that are below limit again.
// Called when the policy changes, since the limit may have grown.
func (b *budgets) rearm(limit int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.sets {
		if limit < 0 || len(s.names) < limit {
			s.exhausted = false
		}
	}
}
