package audit

import (
	"encoding/json"
	"errors"
)

// Batch emission, for the proxy's audit queue (proxy/auditqueue.go): a burst
// of events queued while the previous write was in progress becomes one
// write(2) instead of one per event. The lines are exactly those Emit would
// have written, in order.

// Batcher is a Sink that can write several events with one write.
type Batcher interface {
	Sink
	EmitBatch(events []*Event)
}

// EmitBatch writes events as consecutive lines of the chain with one write.
// An event that does not marshal is skipped and recorded in Err, as in Emit.
func (w *Writer) EmitBatch(events []*Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	buf := make([]byte, 0, 512*len(events)) // one allocation for typical lines
	var ends []int                          // end of each line in buf, for OnWrite
	if w.OnWrite != nil {
		ends = make([]int, 0, len(events))
	}
	prev := w.prev
	for _, e := range events {
		if e.TS.IsZero() {
			e.TS = w.now()
		}
		e.TS = e.TS.UTC()
		e.Prev = prev
		line, err := json.Marshal(e)
		if err != nil {
			w.err = err
			continue
		}
		buf = append(buf, line...)
		prev = HashLine(line)
		if w.OnWrite != nil {
			ends = append(ends, len(buf))
		}
		buf = append(buf, '\n')
	}
	if len(buf) == 0 {
		return
	}
	if _, err := w.w.Write(buf); err != nil {
		w.err = err
		return
	}
	w.prev = prev
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
// of the batch dropped (Emit would fail the same way on a full disk).
func (r *Rotating) EmitBatch(events []*Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		r.setErr(errors.New("audit: emit on a closed sink"))
		return
	}
	buf := make([]byte, 0, 512*len(events))
	prev := r.prev
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
		r.prev = prev
		buf = buf[:0]
		return true
	}
	for _, e := range events {
		if e.TS.IsZero() {
			e.TS = r.now()
		}
		e.TS = e.TS.UTC()
		e.Prev = prev
		line, err := json.Marshal(e)
		if err != nil {
			r.setErr(err)
			continue
		}
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
		buf = append(buf, line...)
		buf = append(buf, '\n')
		prev = HashLine(line)
	}
	flush()
}
