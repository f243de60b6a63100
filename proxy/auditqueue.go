package proxy

import (
	"io"
	"sync"

	"github.com/cagent-dev/cagent/audit"
)

// auditQueueLen bounds the events waiting for the writer; when it is full
// Emit waits, so no event is ever dropped.
const auditQueueLen = 4096

// maxAuditBatch bounds the events written with one write.
const maxAuditBatch = 512

// AuditQueue is an audit.Sink that hands events to one writer goroutine.
// The request path then only copies the event into a channel: the JSON
// encoding, the hash chain and the write happen off it, and every event that
// queued up while the previous write was in progress goes out with the next
// one write (when the sink is an audit.Batcher). The writer flushes as soon
// as the queue is empty, so events reach the file within a scheduling delay.
// Events are never dropped: a full queue makes Emit wait. Close writes what
// is queued; events emitted after Close go to the sink directly.
type AuditQueue struct {
	sink audit.Sink
	ch   chan audit.Event // by value: the caller may reuse its event

	mu     sync.RWMutex // held for reading while sending, so Close cannot close ch under a sender
	closed bool
	done   chan struct{}
}

// NewAuditQueue starts the writer goroutine for sink; Close stops it.
func NewAuditQueue(sink audit.Sink) *AuditQueue {
	q := &AuditQueue{sink: sink, ch: make(chan audit.Event, auditQueueLen), done: make(chan struct{})}
	go q.loop()
	return q
}

// Emit queues a copy of e.
func (q *AuditQueue) Emit(e *audit.Event) {
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		q.sink.Emit(e)
		return
	}
	q.ch <- *e
	q.mu.RUnlock()
}

func (q *AuditQueue) loop() {
	defer close(q.done)
	batcher, _ := q.sink.(audit.Batcher)
	evs := make([]audit.Event, 0, 64)
	ptrs := make([]*audit.Event, 0, 64)
	for e := range q.ch {
		evs = append(evs[:0], e)
	drain:
		for len(evs) < maxAuditBatch {
			select {
			case e, ok := <-q.ch:
				if !ok {
					break drain
				}
				evs = append(evs, e)
			default:
				break drain
			}
		}
		if batcher != nil {
			ptrs = ptrs[:0]
			for i := range evs {
				ptrs = append(ptrs, &evs[i])
			}
			batcher.EmitBatch(ptrs)
			clear(ptrs)
		} else {
			for i := range evs {
				q.sink.Emit(&evs[i])
			}
		}
		clear(evs) // do not keep the strings of old events alive
	}
}

// Close writes every queued event and stops the writer. It does not close
// the sink.
func (q *AuditQueue) Close() error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	<-q.done
	return nil
}

// batchMulti sends each event to every sink in order (the file before
// stdout), each sink getting its own copy, a batch at a time.
type batchMulti []audit.Sink

func (m batchMulti) Emit(e *audit.Event) {
	for _, s := range m {
		c := *e
		s.Emit(&c)
	}
}

func (m batchMulti) EmitBatch(evs []*audit.Event) {
	cp := make([]audit.Event, len(evs))
	ptrs := make([]*audit.Event, len(evs))
	for _, s := range m {
		for i, e := range evs {
			cp[i], ptrs[i] = *e, &cp[i]
		}
		if b, ok := s.(audit.Batcher); ok {
			b.EmitBatch(ptrs)
			continue
		}
		for _, e := range ptrs {
			s.Emit(e)
		}
	}
}

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
