package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
)

// slowSink counts events and blocks each write until released.
type slowSink struct {
	captured
	gate    chan struct{}
	batches int
}

func (s *slowSink) EmitBatch(evs []*audit.Event) {
	<-s.gate
	s.mu.Lock()
	s.batches++
	s.mu.Unlock()
	for _, e := range evs {
		s.captured.Emit(e)
	}
}

func TestAuditQueueKeepsEveryEventInChainOrder(t *testing.T) {
	var buf syncBuf
	w := audit.NewWriter(&buf, "", nil)
	q := NewAuditQueue(w)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				ev := &audit.Event{Type: audit.TypeHTTP, Decision: audit.Allow, Host: fmt.Sprintf("g%d-%d.test", g, i)}
				q.Emit(ev)
				ev.Host = "reused" // the queue holds its own copy
			}
		}()
	}
	wg.Wait()
	q.Close()
	res, err := audit.Verify(strings.NewReader(buf.String()), "")
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

func TestAuditQueueFlushesPromptly(t *testing.T) {
	var sink captured
	q := NewAuditQueue(&sink)
	defer q.Close()
	q.Emit(&audit.Event{Type: audit.TypeHTTP, Host: "a.test"})
	deadline := time.Now().Add(2 * time.Second)
	for len(sink.all()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(sink.all()) != 1 {
		t.Fatal("an event waited in the queue with nothing else to write")
	}
}

func TestAuditQueueBlocksInsteadOfDropping(t *testing.T) {
	s := &slowSink{gate: make(chan struct{})}
	q := NewAuditQueue(s)
	n := auditQueueLen + 2*maxAuditBatch + 10
	sent := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			q.Emit(&audit.Event{Type: audit.TypeHTTP, Port: i})
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

func TestAuditQueueEmitAfterClose(t *testing.T) {
	var sink captured
	q := NewAuditQueue(&sink)
	q.Close()
	q.Emit(&audit.Event{Type: audit.TypeHTTP, Host: "late.test"})
	if evs := sink.all(); len(evs) != 1 || evs[0].Host != "late.test" {
		t.Fatalf("events %+v: a late event must still reach the sink", evs)
	}
}

func TestBatchMultiCopiesPerSink(t *testing.T) {
	var a, b bytes.Buffer
	m := batchMulti{audit.NewWriter(&a, "", nil), audit.NewWriter(&b, "", nil)}
	q := NewAuditQueue(m)
	for i := 0; i < 10; i++ {
		q.Emit(&audit.Event{Type: audit.TypeHTTP, Port: i})
	}
	q.Close()
	for _, buf := range []*bytes.Buffer{&a, &b} {
		res, err := audit.Verify(bytes.NewReader(buf.Bytes()), "")
		if err != nil || res.Broken != nil || res.Lines != 10 {
			t.Fatalf("Verify = %+v, %v", res, err)
		}
	}
}

// lineRecorder records each Write call.
type lineRecorder struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	gate   chan struct{} // if set, each Write waits on it
}

func (r *lineRecorder) Write(p []byte) (int, error) {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	return r.buf.Write(p)
}

func (r *lineRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

func TestAsyncWriterKeepsWholeLines(t *testing.T) {
	out := &lineRecorder{}
	w := newAsyncWriter(out)
	const writers, each = 8, 300
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				line := []byte(fmt.Sprintf("writer=%d line=%d end\n", g, i))
				w.Write(line)
				copy(line, "XXXXXX") // the writer holds its own copy
			}
		}()
	}
	wg.Wait()
	w.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
	next := map[string]int{}
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer=%d line=%d end", &g, &i); err != nil {
			t.Fatalf("mangled line %q", l)
		}
		if k := fmt.Sprint(g); next[k] != i {
			t.Fatalf("writer %d: line %d after %d", g, i, next[k]-1)
		}
		next[fmt.Sprint(g)]++
	}
	w.Write([]byte("after close\n"))
	if !strings.HasSuffix(out.String(), "after close\n") {
		t.Error("a write after Close was lost")
	}
}

func TestAsyncWriterPromptAndBounded(t *testing.T) {
	out := &lineRecorder{gate: make(chan struct{})}
	w := newAsyncWriter(out)
	w.Write([]byte("first\n"))
	// The writer is stuck in out.Write; fill the buffer past its bound.
	big := bytes.Repeat([]byte("x"), maxLogBuf/4)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 8; i++ {
			w.Write(big)
		}
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Write never waited although the output was stuck and the buffer full")
	case <-time.After(200 * time.Millisecond):
	}
	close(out.gate)
	<-done
	w.Close()
	if got := len(out.String()); got != len("first\n")+8*len(big) {
		t.Fatalf("%d bytes written", got)
	}
}
