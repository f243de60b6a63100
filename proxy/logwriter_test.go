package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineRecorder records each Write call.
type lineRecorder struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	gate   chan struct{} // if set, each Write waits on it
	// entered, if set, is signalled when a Write starts waiting on gate.
	entered chan struct{}
}

func (r *lineRecorder) Write(p []byte) (int, error) {
	if r.gate != nil {
		if r.entered != nil {
			select {
			case r.entered <- struct{}{}:
			default:
			}
		}
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
	out := &lineRecorder{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w := newAsyncWriter(out)
	w.Write([]byte("first\n"))
	// Once the writer is stuck in out.Write with just the first line (had
	// it taken some of the big writes with it, the rest could fit without
	// waiting), fill the buffer past its bound.
	<-out.entered
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
