package dnsfilter

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cagent-dev/cagent/audit"
)

// batchSink appends hash-chained audit events to a file from one goroutine,
// writing every event that queued up meanwhile with one write. A DNS filter
// emits an event per query; one write(2) per event under a lock would cap
// the filter's throughput at the audit log's. No event is ever dropped: when
// the queue is full, Emit waits.
type batchSink struct {
	ch   chan *audit.Event
	done chan struct{}
	once sync.Once
	w    *audit.Writer // writes into buf, chaining the hashes
	buf  bytes.Buffer
	out  io.Writer
	f    *os.File // nil when out is not ours to close
	err  error
}

// openBatchFile opens (creating, mode 0600) an audit file for appending,
// refusing one whose chain is broken, like audit.OpenFile.
func openBatchFile(path string) (*batchSink, error) {
	fs, err := audit.OpenFile(path) // verifies the existing chain
	if err != nil {
		return nil, err
	}
	prev := fs.Prev()
	fs.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	s := newBatchSink(f, prev)
	s.f = f
	return s, nil
}

func newBatchSink(out io.Writer, prev string) *batchSink {
	s := &batchSink{ch: make(chan *audit.Event, 4096), done: make(chan struct{}), out: out}
	s.w = audit.NewWriter(&s.buf, prev, nil)
	go s.loop()
	return s
}

// Emit queues a copy of e.
func (s *batchSink) Emit(e *audit.Event) {
	c := *e
	s.ch <- &c
}

func (s *batchSink) loop() {
	defer close(s.done)
	for e := range s.ch {
		s.w.Emit(e)
	drain:
		for s.buf.Len() < 256<<10 {
			select {
			case e, ok := <-s.ch:
				if !ok {
					break drain
				}
				s.w.Emit(e)
			default:
				break drain
			}
		}
		if _, err := s.out.Write(s.buf.Bytes()); err != nil && s.err == nil {
			s.err = err
		}
		s.buf.Reset()
	}
}

// Close writes what is queued and closes the file. Emit must not be called
// after Close.
func (s *batchSink) Close() error {
	s.once.Do(func() { close(s.ch) })
	<-s.done
	if s.f != nil {
		if err := s.f.Close(); err != nil && s.err == nil {
			s.err = err
		}
	}
	return s.err
}
