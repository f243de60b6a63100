package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"unsafe"
)

// Batch emission, for Queue: a burst
// of events queued while the previous write was in progress becomes one
// write(2) instead of one per event. The lines are exactly those Emit would
// have written, in order.

// Batcher is a Sink that can write several events with one write.
type Batcher interface {
	Sink
	EmitBatch(events []*Event)
}

// chainHash holds the hex hash of the line just encoded. Within a batch the
// next event's prev is a view of it (no allocation per event); the view is
// only read while that event is encoded, and cloned when it must outlive the
// batch.
type chainHash [64]byte

func (h *chainHash) of(line []byte) string {
	sum := sha256.Sum256(line)
	hex.Encode(h[:], sum[:])
	return unsafe.String(&h[0], len(h))
}

// EmitBatch writes events as consecutive lines of the chain with one write.
// Unlike Emit, it leaves each event's Prev empty.
// An event that does not marshal is skipped and recorded in Err, as in Emit.
func (w *Writer) EmitBatch(events []*Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	buf := w.buf[:0]
	var ends []int // end of each line in buf, for OnWrite
	if w.OnWrite != nil {
		ends = make([]int, 0, len(events))
	}
	prev := w.prev
	var h chainHash
	for _, e := range events {
		if e.TS.IsZero() {
			e.TS = w.now()
		}
		e.TS = e.TS.UTC()
		e.Prev = prev
		start := len(buf)
		nb, err := appendEvent(buf, e)
		e.Prev = "" // do not leave a view of h behind
		if err != nil {
			w.err = err
			buf = nb[:start]
			continue
		}
		buf = nb
		prev = h.of(buf[start:])
		if w.OnWrite != nil {
			ends = append(ends, len(buf))
		}
		buf = append(buf, '\n')
	}
	defer func() { w.buf = keepBuf(buf) }()
	if len(buf) == 0 {
		return
	}
	if _, err := w.w.Write(buf); err != nil {
		w.err = err
		return
	}
	w.prev = strings.Clone(prev)
	if w.OnWrite != nil {
		start := 0
		for _, end := range ends {
			w.OnWrite(buf[start:end])
			start = end + 1
		}
	}
}

// EmitBatch writes events as consecutive lines of the chain, one write per
// file: it rotates between two lines exactly where Emit would. On a write
// error the partial line is cut off, the error recorded in Err, and the rest
// of the batch dropped (Emit would fail the same way on a full disk). Unlike
// Emit, it leaves each event's Prev empty.
func (r *Rotating) EmitBatch(events []*Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		r.setErr(errors.New("audit: emit on a closed sink"))
		return
	}
	buf := r.buf[:0]
	defer func() { r.buf = keepBuf(buf) }()
	prev := r.prev
	var h chainHash
	flush := func() bool {
		if len(buf) == 0 {
			return true
		}
		if n, err := r.f.Write(buf); err != nil {
			if n > 0 {
				_ = r.f.Truncate(r.size)
			}
			r.setErr(err)
			return false
		}
		r.size += int64(len(buf))
		r.prev = strings.Clone(prev)
		buf = buf[:0]
		return true
	}
	for _, e := range events {
		if e.TS.IsZero() {
			e.TS = r.now()
		}
		e.TS = e.TS.UTC()
		e.Prev = prev
		start := len(buf)
		nb, err := appendEvent(buf, e)
		e.Prev = "" // do not leave a view of h behind
		if err != nil {
			r.setErr(err)
			buf = nb[:start]
			continue
		}
		// The line is at the end of buf; take it off while flushing what precedes it.
		line := nb[start:]
		next := h.of(line) // before line's bytes are moved by the append below
		buf = nb[:start]
		if size := r.size + int64(len(buf)); size > 0 && size+int64(len(line))+1 > r.maxSize {
			if !flush() {
				return
			}
			if err := r.create(); err != nil {
				r.setErr(err) // keep writing to the full file rather than lose events
			} else {
				r.prune()
			}
		}
		buf = append(buf, line...) // memmove: safe although they overlap
		buf = append(buf, '\n')
		prev = next
	}
	flush()
}
