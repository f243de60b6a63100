package connect

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func appendN(t *testing.T, s *Spool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := s.Append([]byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpoolReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	appendN(t, s, 0, 10)
	first, es, err := s.Read(1, 4, 1<<20)
	if err != nil || first != 1 || len(es) != 4 || string(es[0]) != `{"n":0}` {
		t.Fatalf("read: %d %q %v", first, es, err)
	}
	if err := s.Ack(4); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Reopened: same id, acknowledged events are not read again, new
	// events continue the sequence.
	s, err = OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ID() != id || s.Acked() != 4 || s.Pending() != 6 {
		t.Fatalf("reopened: id %s acked %d pending %d", s.ID(), s.Acked(), s.Pending())
	}
	if seq, _ := s.Append([]byte(`{"n":10}`)); seq != 11 {
		t.Fatalf("next seq %d", seq)
	}
	first, es, _ = s.Read(1, 100, 1<<20)
	if first != 5 || len(es) != 7 || string(es[6]) != `{"n":10}` {
		t.Fatalf("after reopen: %d %q", first, es)
	}
	for _, f := range []string{"id", "acked"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if _, err := s.Append([]byte("a\nb")); err == nil {
		t.Fatal("newline accepted")
	}
}

func TestSpoolRepairsTornTail(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenSpool(dir, 0)
	appendN(t, s, 0, 3)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	f, _ := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`4 {"n":tor`) // a crash in the middle of a write
	f.Close()
	s, err := OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if seq, _ := s.Append([]byte(`{"n":3}`)); seq != 4 {
		t.Fatalf("seq after repair %d", seq)
	}
	_, es, _ := s.Read(1, 100, 1<<20)
	if len(es) != 4 || string(es[3]) != `{"n":3}` {
		t.Fatalf("events %q", es)
	}
}

func TestSpoolSegmentsDeletedAndBounded(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenSpool(dir, 64<<10) // 16 KiB segments
	defer s.Close()
	appendN(t, s, 0, 8000) // ~125 KB: beyond the bound, the oldest are dropped
	var size int64
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, g := range segs {
		fi, _ := os.Stat(g)
		size += fi.Size()
	}
	if size > 64<<10+16<<10 {
		t.Fatalf("spool holds %d bytes", size)
	}
	if s.Dropped() == 0 || s.Pending()+s.Dropped() != 8000 {
		t.Fatalf("dropped %d pending %d", s.Dropped(), s.Pending())
	}
	// Reading starts after the dropped events and is consecutive.
	first, es, _ := s.Read(1, 10, 1<<20)
	if first != s.Acked()+1 || !strings.Contains(string(es[0]), fmt.Sprint(first-1)) {
		t.Fatalf("first %d %q", first, es[0])
	}
	if err := s.Ack(8000); err != nil {
		t.Fatal(err)
	}
	segs, _ = filepath.Glob(filepath.Join(dir, "*.log"))
	if len(segs) != 1 || s.Pending() != 0 {
		t.Fatalf("after full ack: %d segments, %d pending", len(segs), s.Pending())
	}
}

func TestJitterSpreadsWithinTheUpperHalf(t *testing.T) {
	const b = 8 * time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := jitter(b)
		if d < b/2 || d > b {
			t.Fatalf("jitter(%v) = %v", b, d)
		}
		seen[d/(100*time.Millisecond)] = true
	}
	if len(seen) < 20 {
		t.Fatalf("not spread: %d distinct 100 ms buckets", len(seen))
	}
}
