package dnsfilter

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/cagent-dev/cagent/audit"
)

// unsafeString views b as a string without copying; b must not change
// while the string is in use.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// batchSink appends hash-chained audit events to a file from one goroutine,
// writing every event that queued up meanwhile with one write. A DNS filter
// emits an event per query; one write(2) per event under a lock would cap
// the filter's throughput at the audit log's. No event is ever dropped: when
// the queue is full, Emit waits.
type batchSink struct {
	ch   chan audit.Event // by value: no allocation per event
	done chan struct{}
	once sync.Once
	prev [64]byte // hex SHA-256 of the last line written (or "" when plen is 0)
	plen int
	buf  []byte
	out  io.Writer
	f    *os.File // nil when out is not ours to close
	err  error
	// onErr, if set, is called once, from the writer goroutine, with the
	// first write error (a full disk): events after it are lost.
	onErr func(error)
}

// openBatchFile opens (creating, mode 0600) an audit file for appending,
// refusing one whose chain is broken, like audit.OpenFile.
func openBatchFile(path string, onErr func(error)) (*batchSink, error) {
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
	s := newBatchSink(f, prev, onErr)
	s.f = f
	return s, nil
}

func newBatchSink(out io.Writer, prev string, onErr func(error)) *batchSink {
	s := &batchSink{ch: make(chan audit.Event, 1024), done: make(chan struct{}), out: out, onErr: onErr}
	s.plen = copy(s.prev[:], prev)
	go s.loop()
	return s
}

// Emit queues a copy of e.
func (s *batchSink) Emit(e *audit.Event) { s.ch <- *e }

func (s *batchSink) loop() {
	defer close(s.done)
	for e := range s.ch {
		s.append(&e)
	drain:
		for len(s.buf) < 256<<10 {
			select {
			case e, ok := <-s.ch:
				if !ok {
					break drain
				}
				s.append(&e)
			default:
				break drain
			}
		}
		if _, err := s.out.Write(s.buf); err != nil && s.err == nil {
			s.err = err
			if s.onErr != nil {
				s.onErr(err)
			}
		}
		if cap(s.buf) > 1<<20 {
			s.buf = nil // do not keep a burst's buffer forever
		}
		s.buf = s.buf[:0]
	}
}

// append adds e to the buffer as the next line of the chain.
func (s *batchSink) append(e *audit.Event) {
	if e.TS.IsZero() {
		e.TS = time.Now()
	}
	e.TS = e.TS.UTC()
	if e.Prev = ""; s.plen > 0 {
		e.Prev = unsafeString(s.prev[:s.plen]) // read during this call only
	}
	start := len(s.buf)
	b, err := appendEvent(s.buf, e)
	e.Prev = ""
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		s.buf = b[:start]
		return
	}
	sum := sha256.Sum256(b[start:])
	hex.Encode(s.prev[:], sum[:])
	s.plen = len(s.prev)
	s.buf = append(b, '\n')
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
