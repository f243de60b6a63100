package proxy

import (
	"io"
	"sync"
)

// maxLogBuf is how much log output may wait for the writer before Write
// blocks until it has caught up.
const maxLogBuf = 1 << 20

// asyncWriter gives log lines to one writer goroutine, which writes all the
// lines that arrived meanwhile with one write. The proxy logs one line per
// request; a write(2) per line on the request path cost as much as the
// audit event. Nothing is dropped: past maxLogBuf, Write waits.
type asyncWriter struct {
	out io.Writer

	mu     sync.Mutex
	cond   sync.Cond // signalled when the writer took the buffer
	buf    []byte
	closed bool
	kick   chan struct{} // capacity 1: "there is something to write"
	done   chan struct{}
}

func newAsyncWriter(out io.Writer) *asyncWriter {
	w := &asyncWriter{out: out, kick: make(chan struct{}, 1), done: make(chan struct{})}
	w.cond.L = &w.mu
	go w.loop()
	return w
}

func (w *asyncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.buf) >= maxLogBuf && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		defer w.mu.Unlock() // keep order with a Close that is flushing
		return w.out.Write(p)
	}
	w.buf = append(w.buf, p...)
	select { // under mu: Close closes kick under mu too
	case w.kick <- struct{}{}:
	default:
	}
	w.mu.Unlock()
	return len(p), nil
}

func (w *asyncWriter) loop() {
	defer close(w.done)
	var spare []byte
	for range w.kick {
		w.mu.Lock()
		b := w.buf
		w.buf = spare[:0]
		w.cond.Broadcast()
		w.mu.Unlock()
		if len(b) > 0 {
			w.out.Write(b)
		}
		if cap(b) > maxLogBuf {
			b = nil // do not keep a burst's buffer
		}
		spare = b
	}
	w.mu.Lock()
	if len(w.buf) > 0 {
		w.out.Write(w.buf)
		w.buf = nil
	}
	w.mu.Unlock()
}

// Close writes what is buffered; later writes go straight to the output.
func (w *asyncWriter) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	w.cond.Broadcast()
	close(w.kick)
	w.mu.Unlock()
	<-w.done
	return nil
}
