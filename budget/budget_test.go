package budget

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// t0 is on a minute boundary, so window arithmetic in tests is exact.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func open(t testing.TB, path string, clk *fakeClock) *Tracker {
	t.Helper()
	tr, err := Open(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func TestTake(t *testing.T) {
	type step struct {
		advance   time.Duration // before this step
		n, limit  int64
		wantOK    bool
		wantRetry time.Duration
		wantUsed  int64 // after this step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"fits exactly", []step{
			{0, 60, 100, true, 0, 60},
			{0, 40, 100, true, 0, 100},
			{0, 1, 100, false, 61 * time.Minute, 100},
			{0, 0, 100, true, 0, 100}, // nothing more still fits
		}},
		{"refusal is not counted", []step{
			{0, 90, 100, true, 0, 90},
			{0, 20, 100, false, 61 * time.Minute, 90},
			{0, 10, 100, true, 0, 100},
		}},
		{"retry after waits for the oldest bytes that make room", []step{
			{0, 60, 100, true, 0, 60},
			{30 * time.Minute, 40, 100, true, 0, 100},
			// 10 more need the first 60 to leave: at t0+61m, 16m from now.
			{15 * time.Minute, 10, 100, false, 16 * time.Minute, 100},
			// 70 more need both buckets gone: at t0+30m+61m, 46m from now.
			{0, 70, 100, false, 46 * time.Minute, 100},
		}},
		{"retry after rounds up to whole seconds", []step{
			{0, 100, 100, true, 0, 100},
			{61*time.Minute - 1500*time.Millisecond, 1, 100, false, 2 * time.Second, 100},
			{1 * time.Second, 1, 100, false, time.Second, 100}, // 0.5s left: at least 1s
			{500 * time.Millisecond, 1, 100, true, 0, 1},
		}},
		{"more than the limit never fits", []step{
			{0, 101, 100, false, Window, 0},
		}},
		{"unlimited still counts", []step{
			{0, 1 << 40, 0, true, 0, 1 << 40},
			{0, 5, -1, true, 0, 1<<40 + 5},
			{0, 1, 100, false, 61 * time.Minute, 1<<40 + 5},
		}},
		{"negative n counts nothing", []step{
			{0, -50, 100, true, 0, 0},
		}},
		{"window is at least a full hour", []step{
			{0, 100, 100, true, 0, 100},
			{59*time.Minute + 59*time.Second, 1, 100, false, 61*time.Minute - (59*time.Minute + 59*time.Second), 100},
			{time.Second, 1, 100, false, time.Minute, 100}, // exactly an hour later: still counted
			{time.Minute, 1, 100, true, 0, 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: t0}
			tr := open(t, filepath.Join(t.TempDir(), "b.json"), clk)
			for i, s := range tt.steps {
				clk.Add(s.advance)
				ok, retry := tr.Take("k", s.n, s.limit)
				if ok != s.wantOK || retry != s.wantRetry {
					t.Errorf("step %d: Take(%d, %d) = %v, %v; want %v, %v", i, s.n, s.limit, ok, retry, s.wantOK, s.wantRetry)
				}
				if got := tr.Used("k"); got != s.wantUsed {
					t.Errorf("step %d: Used = %d, want %d", i, got, s.wantUsed)
				}
			}
		})
	}
}

func TestRollingWindow(t *testing.T) {
	clk := &fakeClock{t: t0}
	tr := open(t, filepath.Join(t.TempDir(), "b.json"), clk)
	// 10 bytes every 10 minutes for two hours: the window holds the last 7
	// takes (the one exactly 60 minutes back still counts).
	for i := range 13 {
		if ok, _ := tr.Take("a", 10, 0); !ok {
			t.Fatal("unlimited take refused")
		}
		want := int64(10 * min(i+1, 7))
		if got := tr.Used("a"); got != want {
			t.Fatalf("after %d takes: Used = %d, want %d", i+1, got, want)
		}
		clk.Add(10 * time.Minute)
	}
	if tr.Used("b") != 0 {
		t.Error("unknown key has usage")
	}
	tr.Take("b", 7, 0)
	snap := tr.Snapshot()
	if len(snap) != 2 || snap["a"] != 60 || snap["b"] != 7 {
		t.Errorf("Snapshot = %v", snap)
	}
	clk.Add(2 * time.Hour)
	if snap := tr.Snapshot(); len(snap) != 0 {
		t.Errorf("Snapshot after 2h = %v", snap)
	}
}

func TestPersistence(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "budget")
	path := filepath.Join(dir, "egress.json")
	clk := &fakeClock{t: t0}
	tr, err := Open(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	tr.Take("api.example.test", 1000, 0)
	clk.Add(30 * time.Minute)
	tr.Take("api.example.test", 500, 0)
	tr.Take("other.test", 7, 0)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode(), want)
		}
	}

	tr = open(t, path, clk)
	if got := tr.Used("api.example.test"); got != 1500 {
		t.Errorf("Used after reopen = %d, want 1500", got)
	}
	if got := tr.Used("other.test"); got != 7 {
		t.Errorf("Used after reopen = %d, want 7", got)
	}
	if ok, _ := tr.Take("api.example.test", 1, 1500); ok {
		t.Error("budget reset by the restart")
	}
	clk.Add(31 * time.Minute) // the first 1000 bytes leave
	if got := tr.Used("api.example.test"); got != 500 {
		t.Errorf("Used = %d, want 500", got)
	}
	clk.Add(30 * time.Minute)
	if got := tr.Used("api.example.test"); got != 0 {
		t.Errorf("Used 61 minutes after the last take = %d, want 0", got)
	}
	// Reopening long after: the old buckets are dropped on load.
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr = open(t, path, clk)
	if got := tr.Used("api.example.test"); got != 0 {
		t.Errorf("Used = %d, want 0", got)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.json")
	clk := &fakeClock{t: t0}
	tr, err := Open(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if tr2, err := Open(path, clk.Now); err == nil {
		tr2.Close()
		t.Fatal("two trackers opened one file")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("err = %v", err)
	}
	tr.Take("k", 5, 0)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr = open(t, path, clk) // released by Close
	if tr.Used("k") != 5 {
		t.Error("counts lost")
	}
}

func TestBackgroundFlush(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.json")
	clk := &fakeClock{t: t0}
	tr := open(t, path, clk)
	tr.Take("k", 42, 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(b), "42") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not flushed within 5s: %q, %v", b, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := tr.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptFile(t *testing.T) {
	tests := map[string]string{
		"not json":        "{{{",
		"empty":           "",
		"wrong version":   `{"version":2,"keys":{}}`,
		"unknown field":   `{"version":1,"keys":{},"x":1}`,
		"negative bytes":  `{"version":1,"keys":{"a":[[29000000,-5]]}}`,
		"empty key":       `{"version":1,"keys":{"":[[29000000,5]]}}`,
		"trailing data":   `{"version":1,"keys":{}} {}`,
		"wrong pair type": `{"version":1,"keys":{"a":[["x",1]]}}`,
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			tr, err := Open(path, nil)
			if err == nil {
				tr.Close()
				t.Fatal("corrupt file accepted")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Error("corrupt file was modified")
			}
		})
	}
}

func TestFlushError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "b.json")
	clk := &fakeClock{t: t0}
	tr := open(t, path, clk)
	tr.Take("k", 1, 0)
	if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	err := tr.Flush()
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Flush = %v, want an error naming %s", err, path)
	}
	if !errors.Is(tr.Err(), os.ErrNotExist) {
		t.Errorf("Err = %v", tr.Err())
	}
	os.MkdirAll(filepath.Join(dir, "sub"), 0o700)
	if err := tr.Flush(); err != nil || tr.Err() != nil {
		t.Fatalf("Flush after recovery = %v, %v", err, tr.Err())
	}
}

func TestConcurrentTake(t *testing.T) {
	clk := &fakeClock{t: t0}
	tr := open(t, filepath.Join(t.TempDir(), "b.json"), clk)
	const workers, per = 8, 500
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := int64(0)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if ok, _ := tr.Take("k", 3, 10000); ok {
					mu.Lock()
					accepted += 3
					mu.Unlock()
				}
				tr.Snapshot()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			tr.Flush()
		}
	}()
	wg.Wait()
	if got := tr.Used("k"); got != accepted || got > 10000 || got < 9998 {
		t.Errorf("Used = %d, accepted %d (limit 10000)", got, accepted)
	}
}

func TestTakeDoesNotAllocate(t *testing.T) {
	clk := &fakeClock{t: t0}
	tr := open(t, filepath.Join(t.TempDir(), "b.json"), clk)
	tr.Take("api.example.test", 1, 0)
	allocs := testing.AllocsPerRun(1000, func() { tr.Take("api.example.test", 1, 1<<40) })
	if allocs != 0 {
		t.Errorf("Take allocates %.1f times per call", allocs)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"version":1,"keys":{"a":[[29000000,5]]}}`, `{"version":1,"keys":{}}`, `{}`, `[]`, `{"version":1,"keys":{"a":[[1,2,3]]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fl, err := decode(data)
		if err != nil {
			return
		}
		for k, pairs := range fl.Keys {
			if k == "" {
				t.Fatal("empty key accepted")
			}
			for _, p := range pairs {
				if p[0] < 0 || p[1] < 0 {
					t.Fatal("negative value accepted")
				}
			}
		}
	})
}

func BenchmarkTake(b *testing.B) {
	clk := &fakeClock{t: t0}
	tr := open(b, filepath.Join(b.TempDir(), "b.json"), clk)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tr.Take("api.example.test", 32<<10, 1<<50)
		}
	})
}
