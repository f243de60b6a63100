package adminui

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
)

func TestEventStoreRing(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := NewEventStore(5, nil)
	for i := range 12 {
		s.Emit(&audit.Event{TS: t0.Add(time.Duration(i) * time.Second), Type: "http", Status: i})
	}
	got := s.Query(Filter{Limit: 100})
	if len(got) != 5 {
		t.Fatalf("%d events kept", len(got))
	}
	for i, e := range got {
		if e.Status != 7+i {
			t.Fatalf("order: %d at %d", e.Status, i)
		}
	}
	if got := s.Query(Filter{Limit: 2}); len(got) != 2 || got[0].Status != 10 || got[1].Status != 11 {
		t.Errorf("limit keeps the newest, oldest first: %+v", got)
	}
	since := s.Since(t0.Add(9 * time.Second))
	if len(since) != 3 || since[0].Status != 9 || since[2].Status != 11 {
		t.Errorf("since: %+v", since)
	}
	if got := s.Since(t0); len(got) != 5 {
		t.Errorf("since before the ring: %d", len(got))
	}
	empty := NewEventStore(3, nil)
	if len(empty.Since(t0)) != 0 || len(empty.Query(Filter{Limit: 5})) != 0 {
		t.Error("empty store")
	}
}

func TestEventStoreLoadDir(t *testing.T) {
	dir := t.TempDir()
	w, err := audit.OpenFile(filepath.Join(dir, "a.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		w.Emit(&audit.Event{Type: "dns", QName: "n" + strconv.Itoa(i) + ".example."})
	}
	w.Close()
	os.WriteFile(filepath.Join(dir, "b.jsonl"), []byte("not json\n{\"type\":\"http\",\"host\":\"x.example\",\"prev\":\"\"}\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "ignored.txt"), []byte("{}\n"), 0o600)
	s := NewEventStore(10, nil)
	if err := s.LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	if got := s.Query(Filter{Limit: 100}); len(got) != 4 {
		t.Errorf("loaded %d events: %+v", len(got), got)
	}
}

func fill100k(b *testing.B) (*EventStore, time.Time) {
	now := time.Now()
	s := NewEventStore(DefaultEventCapacity, nil)
	for i := range DefaultEventCapacity {
		s.Emit(&audit.Event{TS: now.Add(time.Duration(i-DefaultEventCapacity) * 30 * time.Millisecond), Type: "http",
			Host: "h" + strconv.Itoa(i%50) + ".example", Decision: "allow", BytesUp: 100, Status: 200})
	}
	return s, now
}

func BenchmarkEventStoreEmit(b *testing.B) {
	s := NewEventStore(DefaultEventCapacity, nil)
	e := &audit.Event{Type: "http", Host: "api.example.com", Decision: "allow"}
	b.ReportAllocs()
	for b.Loop() {
		s.Emit(e)
	}
}

func BenchmarkLogsQuery100k(b *testing.B) {
	s, _ := fill100k(b)
	f := Filter{Domain: "h7.", Decisions: map[string]bool{"deny": true}, Limit: 500} // matches nothing: full scan
	for b.Loop() {
		s.Query(f)
	}
}

func BenchmarkAnalytics100k(b *testing.B) {
	s, now := fill100k(b)
	for b.Loop() {
		ComputeAnalytics(s.Since(now.Add(-time.Hour)), nil, now, 15*time.Minute)
	}
}
