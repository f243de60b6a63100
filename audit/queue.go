package audit

import (
	"errors"
	"sync"
)

// queueLen bounds the events waiting for the writer; when it is full Emit
// waits, so no event is ever dropped. Events are queued by value (~400
// bytes each) and over time every slot is touched, so this is resident
// memory: 1024 slots are 400 KiB, two full batches of headroom while one
// is being written.
const queueLen = 1024

// maxBatch bounds the events written with one write.
const maxBatch = 512

// Queue is a Sink that hands events to one writer goroutine. The request
// path then only copies the event into a channel: the encoding, the hash
// chain and the write happen off it, and every event that queued up while
// the previous write was in progress goes out with the next one write (when
// the sink is a Batcher). The writer flushes as soon as the queue is empty,
// so events reach the sink within a scheduling delay. Events are never
// dropped: a full queue makes Emit wait. Events are written in the order
// Emit returned. Close writes what is queued; events emitted after Close go
// to the sink directly.
type Queue struct {
	sink  Sink
	onErr func(error)
	ch    chan Event // by value: the caller may reuse its event

	mu     sync.RWMutex // held for reading while sending, so Close cannot close ch under a sender
	closed bool
	done   chan struct{}
}

// NewQueue starts the writer goroutine for sink; Close stops it. onErr, if
// not nil, is called once, from the writer goroutine, with the first error
// the sink reports through an Err method (a full disk, say), so that the
// caller can log it.
func NewQueue(sink Sink, onErr func(error)) *Queue {
	q := &Queue{sink: sink, onErr: onErr, ch: make(chan Event, queueLen), done: make(chan struct{})}
	go q.loop()
	return q
}

// Emit queues a copy of e. e does not escape: the caller may keep it on
// its stack and reuse it.
func (q *Queue) Emit(e *Event) {
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		c := *e
		q.sink.Emit(&c)
		return
	}
	q.ch <- *e
	q.mu.RUnlock()
}

func (q *Queue) loop() {
	defer close(q.done)
	batcher, _ := q.sink.(Batcher)
	errs, _ := q.sink.(interface{ Err() error })
	evs := make([]Event, 0, 64)
	ptrs := make([]*Event, 0, 64)
	for e := range q.ch {
		evs = append(evs[:0], e)
	drain:
		for len(evs) < maxBatch {
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
		if q.onErr != nil && errs != nil {
			if err := errs.Err(); err != nil {
				q.onErr(err)
				q.onErr = nil
			}
		}
	}
}

// Close writes every queued event and stops the writer. It does not close
// the sink.
func (q *Queue) Close() error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	<-q.done
	return nil
}

// EmitBatch sends the events to every sink in order, each sink getting its
// own copies, a batch at a time.
func (m multi) EmitBatch(evs []*Event) {
	cp := make([]Event, len(evs))
	ptrs := make([]*Event, len(evs))
	for _, s := range m {
		for i, e := range evs {
			cp[i], ptrs[i] = *e, &cp[i]
		}
		if b, ok := s.(Batcher); ok {
			b.EmitBatch(ptrs)
			continue
		}
		for _, e := range ptrs {
			s.Emit(e)
		}
	}
}

// Err joins the errors of the sinks that report them.
func (m multi) Err() error {
	var errs []error
	for _, s := range m {
		if es, ok := s.(interface{ Err() error }); ok {
			if err := es.Err(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
