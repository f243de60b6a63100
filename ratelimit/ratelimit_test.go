package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/policy"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock          { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }
func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestAllow(t *testing.T) {
	type step struct {
		advance   time.Duration
		wantOK    bool
		wantRetry time.Duration
	}
	tests := []struct {
		name  string
		rl    *policy.RateLimit
		steps []step
	}{
		{"unlimited", nil, []step{{0, true, 0}, {0, true, 0}, {0, true, 0}}},
		{"burst then one per second", &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 2}, []step{
			{0, true, 0}, {0, true, 0}, {0, false, time.Second},
			{time.Second, true, 0}, {0, false, time.Second},
		}},
		{"slow rate: retry rounds up", &policy.RateLimit{RequestsPerMinute: 6, BurstSize: 1}, []step{
			{0, true, 0}, {0, false, 10 * time.Second},
			{5 * time.Second, false, 5 * time.Second},
			{4500 * time.Millisecond, false, time.Second}, // 0.5s left
			{400 * time.Millisecond, false, time.Second},  // 0.1s left: at least 1s
			{100 * time.Millisecond, true, 0},
		}},
		{"retry after over a minute", &policy.RateLimit{RequestsPerMinute: 0.5, BurstSize: 1}, []step{
			{0, true, 0}, {0, false, 120 * time.Second}, {1500 * time.Millisecond, false, 119 * time.Second},
		}},
		{"burst defaults like policy validation", &policy.RateLimit{RequestsPerMinute: 60}, []step{
			// burst = 60/6 = 10
			{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, true, 0}, {0, true, 0},
			{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, true, 0}, {0, true, 0},
			{0, false, time.Second},
		}},
		{"zero rate fails closed", &policy.RateLimit{RequestsPerMinute: 0, BurstSize: 5}, []step{{0, false, time.Minute}}},
		{"refill is capped at burst", &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 1}, []step{
			{0, true, 0}, {time.Hour, true, 0}, {0, false, time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			l := New(clk.Now)
			for i, s := range tt.steps {
				clk.Add(s.advance)
				ok, retry := l.Allow("k", tt.rl)
				if ok != s.wantOK || retry != s.wantRetry {
					t.Errorf("step %d: Allow = %v, %v; want %v, %v", i, ok, retry, s.wantOK, s.wantRetry)
				}
			}
		})
	}
}

func TestKeysIndependent(t *testing.T) {
	l := New(newClock().Now)
	rl := &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 1}
	if ok, _ := l.Allow("a", rl); !ok {
		t.Fatal("a refused")
	}
	if ok, _ := l.Allow("a", rl); ok {
		t.Fatal("a allowed twice")
	}
	// Same values through a different pointer (a reloaded policy): same bucket.
	if ok, _ := l.Allow("a", &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 1}); ok {
		t.Fatal("equal limit from a new policy reset the bucket")
	}
	if ok, _ := l.Allow("b", rl); !ok {
		t.Fatal("b refused because of a")
	}
}

func TestReload(t *testing.T) {
	clk := newClock()
	l := New(clk.Now)
	old := &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 5}
	for range 5 {
		l.Allow("k", old)
	}
	if ok, _ := l.Allow("k", old); ok {
		t.Fatal("burst of 5 exceeded")
	}
	// A reload to a bigger bucket must not hand out a fresh burst...
	bigger := &policy.RateLimit{RequestsPerMinute: 600, BurstSize: 50}
	if ok, retry := l.Allow("k", bigger); ok || retry != time.Second {
		t.Fatalf("after reload: Allow = %v, %v; want refused, 1s", ok, retry)
	}
	// ...but the new rate applies: 10/s.
	clk.Add(time.Second)
	n := 0
	for {
		if ok, _ := l.Allow("k", bigger); !ok {
			break
		}
		n++
	}
	if n != 10 {
		t.Errorf("%d allowed one second after reload, want 10", n)
	}
	// A reload to a smaller bucket caps the level.
	clk.Add(time.Hour)
	smaller := &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 2}
	n = 0
	for {
		if ok, _ := l.Allow("k", smaller); !ok {
			break
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d allowed after shrinking burst to 2", n)
	}
}

func TestLevelsAndForget(t *testing.T) {
	clk := newClock()
	l := New(clk.Now)
	rl := &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 4}
	l.Allow("a.test", rl)
	l.Allow("b.test", rl)
	l.Allow("b.test", rl)
	lv := l.Levels()
	if len(lv) != 2 || lv["a.test"] != 3 || lv["b.test"] != 2 {
		t.Errorf("Levels = %v", lv)
	}
	clk.Add(500 * time.Millisecond)
	if got := l.Levels()["b.test"]; got != 2.5 {
		t.Errorf("level after 0.5s = %v, want 2.5", got)
	}
	l.Forget(func(k string) bool { return k == "a.test" })
	if lv := l.Levels(); len(lv) != 1 || lv["a.test"] != 3.5 {
		t.Errorf("after Forget: %v", lv)
	}
}

func TestEvictsIdleFullBuckets(t *testing.T) {
	clk := newClock()
	l := New(clk.Now)
	rl := &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 5}
	// Many DNS clients, one query each: none is full yet, so all are kept.
	for i := range 3000 {
		l.Allow(fmt.Sprintf("10.209.%d.%d", i/256, i%256), rl)
	}
	if n := l.Len(); n != 3000 {
		t.Errorf("%d buckets held, want 3000 (all in use)", n)
	}
	// A busy client keeps its (non-full) bucket across the sweep.
	clk.Add(sweepEvery - time.Second)
	for range 5 {
		l.Allow("busy", rl)
	}
	clk.Add(time.Second)
	l.Allow("busy", rl) // the periodic sweep runs: every idle bucket is full again
	if n := l.Len(); n != 1 {
		t.Errorf("%d buckets after the idle sweep, want 1 (busy)", n)
	}
	// busy had 1 token back after 1s and spent it above.
	if ok, _ := l.Allow("busy", rl); ok {
		t.Error("busy got a fresh bucket from the sweep")
	}
}

func TestMaxKeys(t *testing.T) {
	clk := newClock()
	l := New(clk.Now)
	l.SetMaxKeys(100)
	rl := &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 5}
	for i := range 10000 {
		l.Allow(fmt.Sprint(i), rl)
		if n := l.Len(); n > 100 {
			t.Fatalf("%d buckets held with a cap of 100", n)
		}
	}
}

func TestConcurrent(t *testing.T) {
	clk := newClock()
	l := New(clk.Now)
	rl := &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 100}
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ok, _ := l.Allow("shared", rl)
				if ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
				l.Allow(fmt.Sprintf("own-%d", w), rl)
				if i%50 == 0 {
					l.Levels()
					l.Forget(func(string) bool { return true })
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 100 {
		t.Errorf("%d allowed from a bucket of 100 with a stopped clock", allowed)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l := New(newClock().Now)
	rl := &policy.RateLimit{RequestsPerMinute: 60, BurstSize: 10}
	l.Allow("api.example.test", rl)
	if a := testing.AllocsPerRun(1000, func() { l.Allow("api.example.test", rl) }); a != 0 {
		t.Errorf("Allow allocates %.1f times per call", a)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(nil)
	rl := &policy.RateLimit{RequestsPerMinute: 1e9, BurstSize: 1 << 30}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow("api.example.test", rl)
		}
	})
}
