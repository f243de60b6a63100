package adminui

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/audit"
)

// EventStore keeps the most recent audit events in memory for the logs and
// analytics pages, and fans new ones out to live-tail subscribers. It is an
// audit.Sink: the daemon sends it the same events it writes to the files.
type EventStore struct {
	mu    sync.Mutex
	ring  []audit.Event
	start int // index of the oldest event when the ring is full
	full  bool
	subs  map[chan audit.Event]struct{}
	now   func() time.Time
}

// DefaultEventCapacity bounds the memory the logs page uses.
const DefaultEventCapacity = 100000

// NewEventStore keeps up to capacity events.
func NewEventStore(capacity int, now func() time.Time) *EventStore {
	if capacity <= 0 {
		capacity = DefaultEventCapacity
	}
	if now == nil {
		now = time.Now
	}
	return &EventStore{ring: make([]audit.Event, 0, capacity), subs: map[chan audit.Event]struct{}{}, now: now}
}

// Emit records e and sends it to subscribers; a slow subscriber misses
// events rather than slowing the data plane.
func (s *EventStore) Emit(e *audit.Event) {
	ev := *e
	if ev.TS.IsZero() {
		ev.TS = s.now()
	}
	ev.TS = ev.TS.UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(ev)
	for ch := range s.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (s *EventStore) add(ev audit.Event) {
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, ev)
		return
	}
	s.ring[s.start] = ev
	s.start = (s.start + 1) % len(s.ring)
	s.full = true
}

// Subscribe returns a channel of new events and a function to stop.
func (s *EventStore) Subscribe() (<-chan audit.Event, func()) {
	ch := make(chan audit.Event, 256)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}
}

// LoadDir reads the audit files (*.jsonl) in dir, oldest first by
// modification time, keeping the newest events that fit. Unparsable lines
// are skipped: `cagent audit verify` is the tool for judging the files.
func (s *EventStore) LoadDir(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return err
	}
	type fi struct {
		path string
		mod  time.Time
	}
	var files []fi
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		files = append(files, fi{p, st.ModTime()})
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].mod.Equal(files[j].mod) {
			return files[i].path < files[j].path
		}
		return files[i].mod.Before(files[j].mod)
	})
	for _, f := range files {
		if err := s.loadFile(f.path); err != nil {
			return err
		}
	}
	return nil
}

func (s *EventStore) loadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	s.mu.Lock()
	defer s.mu.Unlock()
	for sc.Scan() {
		var ev audit.Event
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		ev.TS = ev.TS.UTC()
		s.add(ev)
	}
	return sc.Err()
}

// Filter selects events for the logs page.
type Filter struct {
	Types     map[string]bool // empty: all
	Decisions map[string]bool // empty: all
	Domain    string          // substring of host or qname, case-insensitive
	Text      string          // substring of path, reason, error, action
	Since     time.Time
	Until     time.Time
	Limit     int // newest N; default 500, max 5000
}

// ParseFilter reads a Filter from URL query values. Times are RFC 3339 or
// a duration meaning "that long ago" (e.g. since=15m).
func ParseFilter(get func(string) string, now time.Time) (Filter, error) {
	f := Filter{Limit: 500}
	set := func(v string) map[string]bool {
		if v == "" {
			return nil
		}
		m := map[string]bool{}
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				m[x] = true
			}
		}
		return m
	}
	f.Types = set(get("type"))
	f.Decisions = set(get("decision"))
	f.Domain = strings.ToLower(strings.TrimSpace(get("domain")))
	f.Text = strings.ToLower(strings.TrimSpace(get("q")))
	var err error
	if f.Since, err = parseWhen(get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = parseWhen(get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return f, fmt.Errorf("limit: want a positive integer, got %q", v)
		}
		f.Limit = min(n, 5000)
	}
	return f, nil
}

func parseWhen(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("want RFC 3339 time or a duration like 15m, got %q", v)
	}
	return t, nil
}

// EventDomain is the name an event is about: host for HTTP, qname for DNS.
func EventDomain(e *audit.Event) string {
	if e.Host != "" {
		return strings.ToLower(e.Host)
	}
	return strings.ToLower(strings.TrimSuffix(e.QName, "."))
}

// Match reports whether e passes the filter.
func (f *Filter) Match(e *audit.Event) bool {
	if len(f.Types) > 0 && !f.Types[e.Type] {
		return false
	}
	if len(f.Decisions) > 0 && !f.Decisions[e.Decision] {
		return false
	}
	if f.Domain != "" && !strings.Contains(EventDomain(e), f.Domain) {
		return false
	}
	if f.Text != "" {
		hay := strings.ToLower(e.Path + " " + e.Reason + " " + e.Error + " " + e.Action + " " + e.Method)
		if !strings.Contains(hay, f.Text) {
			return false
		}
	}
	if !f.Since.IsZero() && e.TS.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && e.TS.After(f.Until) {
		return false
	}
	return true
}

// newest returns the i-th newest event (0 is the newest); s.mu is held.
func (s *EventStore) newest(i int) *audit.Event {
	n := len(s.ring)
	return &s.ring[(s.start+n-1-i)%n]
}

// Since returns the events from cut on, oldest first. Events arrive in
// about time order, so the walk back stops at the first older one, and only
// the window is copied (the ring may hold 100 000 events).
func (s *EventStore) Since(cut time.Time) []audit.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := 0
	for k < len(s.ring) && !s.newest(k).TS.Before(cut) {
		k++
	}
	out := make([]audit.Event, k)
	for i := 0; i < k; i++ {
		out[k-1-i] = *s.newest(i)
	}
	return out
}

// Query returns the newest matching events, oldest first. It scans under
// the lock and copies only the matches.
func (s *EventStore) Query(f Filter) []audit.Event {
	var out []audit.Event
	s.mu.Lock()
	for i := 0; i < len(s.ring) && len(out) < f.Limit; i++ {
		if e := s.newest(i); f.Match(e) {
			out = append(out, *e)
		}
	}
	s.mu.Unlock()
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
