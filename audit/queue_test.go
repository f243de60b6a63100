package audit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The queue runs a goroutine: every test must stop what it starts.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// captured records the events it is given.
type captured struct {
	mu     sync.Mutex
	events []Event
}

func (c *captured) Emit(e *Event) {
	c.mu.Lock()
	c.events = append(c.events, *e)
	c.mu.Unlock()
}

func (c *captured) all() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// slowSink counts events and blocks each write until released.
type slowSink struct {
	captured
	gate    chan struct{}
	batches int
}

func (s *slowSink) EmitBatch(evs []*Event) {
	<-s.gate
	s.mu.Lock()
	s.batches++
	s.mu.Unlock()
	for _, e := range evs {
		s.captured.Emit(e)
	}
}

func TestQueueKeepsEveryEventInChainOrder(t *testing.T) {
	var buf syncBuf
	w := NewWriter(&buf, "", nil)
	q := NewQueue(w, nil)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				ev := &Event{Type: TypeHTTP, Decision: Allow, Host: fmt.Sprintf("g%d-%d.test", g, i)}
				q.Emit(ev)
				ev.Host = "reused" // the queue holds its own copy
			}
		}()
	}
	wg.Wait()
	q.Close()
	res, err := Verify(strings.NewReader(buf.String()), "")
	if err != nil || res.Broken != nil || res.Lines != writers*each {
		t.Fatalf("Verify = %+v, %v; want %d intact lines", res, err, writers*each)
	}
	if strings.Contains(buf.String(), "reused") {
		t.Fatal("the queue wrote an event the caller changed after Emit")
	}
	for g := 0; g < writers; g++ {
		for _, i := range []int{0, each - 1} {
			if !strings.Contains(buf.String(), fmt.Sprintf(`"g%d-%d.test"`, g, i)) {
				t.Fatalf("event g%d-%d missing", g, i)
			}
		}
	}
}

func TestQueueFlushesPromptly(t *testing.T) {
	var sink captured
	q := NewQueue(&sink, nil)
	defer q.Close()
	q.Emit(&Event{Type: TypeHTTP, Host: "a.test"})
	deadline := time.Now().Add(2 * time.Second)
	for len(sink.all()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(sink.all()) != 1 {
		t.Fatal("an event waited in the queue with nothing else to write")
	}
}

func TestQueueBlocksInsteadOfDropping(t *testing.T) {
	s := &slowSink{gate: make(chan struct{})}
	q := NewQueue(s, nil)
	n := queueLen + 2*maxBatch + 10
	sent := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			q.Emit(&Event{Type: TypeHTTP, Port: i})
		}
		close(sent)
	}()
	select {
	case <-sent:
		t.Fatal("Emit never waited although the sink was stuck and the queue full")
	case <-time.After(200 * time.Millisecond):
	}
	close(s.gate)
	<-sent
	q.Close()
	evs := s.all()
	if len(evs) != n {
		t.Fatalf("%d events written, want %d", len(evs), n)
	}
	for i, e := range evs {
		if e.Port != i {
			t.Fatalf("event %d has port %d: order changed", i, e.Port)
		}
	}
	if s.batches >= n {
		t.Errorf("%d writes for %d events: nothing was batched", s.batches, n)
	}
}

func TestQueueEmitAfterClose(t *testing.T) {
	var sink captured
	q := NewQueue(&sink, nil)
	q.Close()
	q.Emit(&Event{Type: TypeHTTP, Host: "late.test"})
	if evs := sink.all(); len(evs) != 1 || evs[0].Host != "late.test" {
		t.Fatalf("events %+v: a late event must still reach the sink", evs)
	}
}

func TestMultiCopiesPerSink(t *testing.T) {
	var a, b bytes.Buffer
	m := Multi(NewWriter(&a, "", nil), NewWriter(&b, "", nil))
	q := NewQueue(m, nil)
	for i := 0; i < 10; i++ {
		q.Emit(&Event{Type: TypeHTTP, Port: i})
	}
	q.Close()
	for _, buf := range []*bytes.Buffer{&a, &b} {
		res, err := Verify(bytes.NewReader(buf.Bytes()), "")
		if err != nil || res.Broken != nil || res.Lines != 10 {
			t.Fatalf("Verify = %+v, %v", res, err)
		}
	}
}

// TestQueueResumesFileChain writes from many goroutines through a queue
// into a file twice; the second run continues the first's chain.
func TestQueueResumesFileChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	for round := 0; round < 2; round++ {
		fs, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		q := NewQueue(fs, nil)
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 500; i++ {
					q.Emit(&Event{Type: TypeDNS, QName: "x.test"})
				}
			}()
		}
		wg.Wait()
		q.Close()
		if err := fs.Close(); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Verify(f, "")
	if err != nil || res.Broken != nil || res.Lines != 4000 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestQueueReportsFirstSinkError(t *testing.T) {
	var got []error
	var mu sync.Mutex
	var ok bytes.Buffer
	q := NewQueue(Multi(NewWriter(&ok, "", nil), NewWriter(diskFull{}, "", nil)), func(err error) {
		mu.Lock()
		got = append(got, err)
		mu.Unlock()
	})
	for i := 0; i < 3; i++ {
		q.Emit(&Event{Type: TypeDNS})
		time.Sleep(5 * time.Millisecond) // separate batches
	}
	q.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || !strings.Contains(got[0].Error(), "disk full") {
		t.Fatalf("onErr calls: %v; want one with the write error", got)
	}
	if n := strings.Count(ok.String(), "\n"); n != 3 {
		t.Fatalf("the healthy sink got %d lines, want 3", n)
	}
}

// TestQueueEmitDoesNotAllocate: the DNS filter's fast path relies on Emit
// copying the event rather than keeping the pointer.
func TestQueueEmitDoesNotAllocate(t *testing.T) {
	q := NewQueue(Discard, nil)
	defer q.Close()
	ev := Event{Type: TypeDNS, QName: "a.test"}
	if n := testing.AllocsPerRun(100, func() { q.Emit(&ev) }); n != 0 {
		t.Fatalf("Emit allocated %v times", n)
	}
}

type diskFull struct{}

func (diskFull) Write([]byte) (int, error) { return 0, errors.New("disk full") }
