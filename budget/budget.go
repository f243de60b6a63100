// Package budget enforces egress byte budgets: bytes sent upstream per key
// (a policy domain) per rolling hour. Counters are persisted, so restarting
// the data plane does not hand an agent a fresh budget.
//
// Each key has a ring of one-minute buckets. A byte counts from the moment it
// is taken until the end of the minute an hour later (60 to 61 minutes), so
// no 60-minute period ever sees more than the limit. The file is JSON,
// {"version":1,"keys":{KEY:[[UNIX_MINUTE,BYTES],...]}}, written atomically
// (mode 0600) at most once a second when something changed, and on Close. A
// corrupt file stops Open rather than resetting every budget, and a lock
// file beside it (PATH.lock) keeps a second tracker from overwriting it.
package budget

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cagent-dev/cagent/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// Window is the length of the rolling window.
	Window = time.Hour
	// bucketSpan is the granularity of the window. Bytes stay counted for
	// between 60 and 61 minutes: never less than the full hour.
	bucketSpan = time.Minute
	// windowBuckets buckets (the current one and the 60 before it) are summed.
	windowBuckets = 61
	// ringSize is a power of two >= windowBuckets so the slot is a mask.
	ringSize = 64

	fileVersion   = 1
	flushInterval = time.Second
)

// counter is one key's ring of per-minute byte counts.
type counter struct {
	minute [ringSize]int64 // which minute (unix minutes) each slot holds
	bytes  [ringSize]int64
}

func (c *counter) used(now int64) int64 {
	var sum int64
	for i := range ringSize {
		if m := c.minute[i]; m > now-windowBuckets && m <= now && c.bytes[i] != 0 {
			sum += c.bytes[i]
		}
	}
	return sum
}

func (c *counter) add(now, n int64) {
	i := now & (ringSize - 1)
	if c.minute[i] != now {
		c.minute[i] = now
		c.bytes[i] = 0
	}
	c.bytes[i] += n
}

// retryAfter returns how long until at least need bytes have left the
// window, counting from t (whose minute is now).
func (c *counter) retryAfter(t time.Time, now, need int64) time.Duration {
	var freed int64
	for m := now - windowBuckets + 1; m <= now; m++ {
		i := m & (ringSize - 1)
		if c.minute[i] != m {
			continue
		}
		freed += c.bytes[i]
		if freed >= need {
			leaves := time.Unix((m+windowBuckets)*60, 0)
			return ceilSecond(leaves.Sub(t))
		}
	}
	// Only reached when n alone exceeds the limit: it will never fit.
	return Window
}

func ceilSecond(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1).Truncate(time.Second)
}

// Tracker counts bytes per key. It is safe for concurrent use.
type Tracker struct {
	path  string
	clock func() time.Time
	lock  *os.File // flock held while open: one writer per file

	mu       sync.Mutex
	counters map[string]*counter
	dirty    bool
	flushErr error

	flushMu sync.Mutex // serialises file writes

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// file is the persisted form: per key, [unix minute, bytes] pairs.
type file struct {
	Version int                   `json:"version"`
	Keys    map[string][][2]int64 `json:"keys"`
}

// Open loads the counters kept in path, if it exists, and starts a
// background flusher. clock may be nil (time.Now).
func Open(path string, clock func() time.Time) (*Tracker, error) {
	if clock == nil {
		clock = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	t := &Tracker{
		path:     path,
		clock:    clock,
		lock:     lock,
		counters: make(map[string]*counter),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if err := t.load(); err != nil {
		lock.Close()
		return nil, err
	}
	go t.flusher()
	return t, nil
}

// lockFile takes an exclusive, non-blocking flock: two trackers writing one
// file would each overwrite the other's counts, so the second Open fails.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("budget: %s is in use by another tracker (another data plane on this state directory, or one not closed)", path)
		}
		return nil, fmt.Errorf("budget: lock %s: %w", path, err)
	}
	return f, nil
}

func (t *Tracker) load() error {
	data, err := os.ReadFile(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	f, err := decode(data)
	if err != nil {
		// Never reset silently: a lost file would hand every agent a fresh budget.
		return fmt.Errorf("budget: %s is corrupt (%v); fix or remove it", t.path, err)
	}
	now := minuteOf(t.clock())
	for key, pairs := range f.Keys {
		c := &counter{}
		for _, p := range pairs {
			m, n := p[0], p[1]
			if m <= now-windowBuckets {
				continue
			}
			// A minute from the future means the clock went back; count the
			// bytes now rather than drop them.
			m = min(m, now)
			c.add(m, n)
		}
		if c.used(now) > 0 {
			t.counters[key] = c
		}
	}
	return nil
}

func decode(data []byte) (*file, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("unsupported version %d", f.Version)
	}
	for key, pairs := range f.Keys {
		if key == "" {
			return nil, errors.New("empty key")
		}
		for _, p := range pairs {
			if p[0] < 0 || p[1] < 0 {
				return nil, fmt.Errorf("key %q: negative value", key)
			}
		}
	}
	return &f, nil
}

func minuteOf(t time.Time) int64 {
	s := t.Unix()
	if s < 0 {
		return (s - 59) / 60
	}
	return s / 60
}

// Take records n bytes against key if they fit under limit for the rolling
// hour. limit <= 0 means unlimited (always ok, still counted). When the bytes
// do not fit they are not counted, and retryAfter (whole seconds, >= 1s) says
// when enough old bytes will have left the window; if n alone exceeds limit
// it never fits and retryAfter is the full window. Take does no I/O.
func (t *Tracker) Take(key string, n int64, limit int64) (ok bool, retryAfter time.Duration) {
	if n < 0 {
		n = 0
	}
	at := t.clock()
	now := minuteOf(at)
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.counters[key]
	if c == nil {
		c = &counter{}
		t.counters[key] = c
	}
	if limit > 0 {
		used := c.used(now)
		if used+n > limit {
			return false, c.retryAfter(at, now, used+n-limit)
		}
	}
	if n > 0 {
		c.add(now, n)
		t.dirty = true
	}
	return true, 0
}

// Used returns the bytes counted against key in the current window.
func (t *Tracker) Used(key string) int64 {
	now := minuteOf(t.clock())
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.counters[key]; c != nil {
		return c.used(now)
	}
	return 0
}

// Snapshot returns the bytes in the current window of every key with any.
func (t *Tracker) Snapshot() map[string]int64 {
	now := minuteOf(t.clock())
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int64, len(t.counters))
	for k, c := range t.counters {
		if u := c.used(now); u > 0 {
			out[k] = u
		}
	}
	return out
}

// Flush writes the counters to the file now (atomically, mode 0600).
func (t *Tracker) Flush() error {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	data := t.encode()
	err := atomicfile.WriteFile(t.path, data, 0o600)
	t.mu.Lock()
	if err != nil {
		t.dirty = true // try again on the next tick
		err = fmt.Errorf("budget: write %s: %w", t.path, err)
	}
	t.flushErr = err
	t.mu.Unlock()
	return err
}

// Err returns the error of the last flush, if it failed.
func (t *Tracker) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flushErr
}

// encode snapshots the counters and drops keys whose window is empty.
func (t *Tracker) encode() []byte {
	now := minuteOf(t.clock())
	t.mu.Lock()
	f := file{Version: fileVersion, Keys: make(map[string][][2]int64, len(t.counters))}
	for key, c := range t.counters {
		var pairs [][2]int64
		for i := range ringSize {
			if m := c.minute[i]; m > now-windowBuckets && m <= now && c.bytes[i] > 0 {
				pairs = append(pairs, [2]int64{m, c.bytes[i]})
			}
		}
		if len(pairs) == 0 {
			delete(t.counters, key) // idle key: nothing left to remember
			continue
		}
		sort.Slice(pairs, func(a, b int) bool { return pairs[a][0] < pairs[b][0] })
		f.Keys[key] = pairs
	}
	t.dirty = false
	t.mu.Unlock()
	data, err := json.Marshal(&f)
	if err != nil {
		panic(err) // maps of strings to int pairs always marshal
	}
	return data
}

func (t *Tracker) flusher() {
	defer close(t.done)
	tick := time.NewTicker(flushInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.mu.Lock()
			dirty := t.dirty
			t.mu.Unlock()
			if dirty {
				t.Flush() // the error is kept for Err and retried next tick
			}
		}
	}
}

// Close stops the background flusher, writes the counters one last time and
// releases the file. Take and Used keep working (in memory) after Close.
func (t *Tracker) Close() error {
	var err error
	t.once.Do(func() {
		close(t.stop)
		<-t.done
		err = t.Flush()
		t.lock.Close() // releases the flock
	})
	return err
}
