package audit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func batchEvents(n int) []*Event {
	var evs []*Event
	for i := 0; i < n; i++ {
		e := &Event{Type: TypeHTTP, Decision: Allow, Host: fmt.Sprintf("b-%d.example.com", i), Path: "/v1/models", Status: 200}
		if i%3 == 0 {
			e.TS = time.Date(2026, 1, 2, 3, 4, 5, i, time.FixedZone("X", 3600))
		}
		evs = append(evs, e)
	}
	return evs
}

func copyEvents(evs []*Event) []*Event {
	out := make([]*Event, len(evs))
	for i, e := range evs {
		c := *e
		out[i] = &c
	}
	return out
}

// emitInBatches hands evs to b in batches of the given sizes (cycled).
func emitInBatches(b Batcher, evs []*Event, sizes ...int) {
	for i, k := 0, 0; i < len(evs); k++ {
		n := min(sizes[k%len(sizes)], len(evs)-i)
		b.EmitBatch(evs[i : i+n])
		i += n
	}
}

func TestWriterEmitBatchMatchesEmit(t *testing.T) {
	evs := batchEvents(20)
	var one, batch bytes.Buffer
	w1 := NewWriter(&one, "abc", newClock().Now)
	for _, e := range copyEvents(evs) {
		w1.Emit(e)
	}
	w2 := NewWriter(&batch, "abc", newClock().Now)
	var lines [][]byte
	w2.OnWrite = func(l []byte) { lines = append(lines, append([]byte(nil), l...)) }
	emitInBatches(w2, copyEvents(evs), 1, 7, 0, 5)
	if one.String() != batch.String() || w1.Prev() != w2.Prev() {
		t.Fatalf("EmitBatch wrote\n%s\nEmit wrote\n%s", batch.String(), one.String())
	}
	if got := bytes.Join(lines, []byte("\n")); !bytes.Equal(append(got, '\n'), batch.Bytes()) {
		t.Errorf("OnWrite saw different lines")
	}
	res, err := Verify(&batch, "abc")
	if err != nil || res.Broken != nil || res.Lines != 20 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}

func TestWriterEmitBatchWriteError(t *testing.T) {
	w := NewWriter(batchFailWriter{}, "", nil)
	w.EmitBatch(batchEvents(3))
	if w.Err() == nil || w.Prev() != "" {
		t.Fatalf("err %v prev %q: a failed write must not advance the chain", w.Err(), w.Prev())
	}
}

type batchFailWriter struct{}

func (batchFailWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestRotatingEmitBatchMatchesEmit(t *testing.T) {
	evs := batchEvents(60)
	run := func(dir string, emit func(r *Rotating, evs []*Event)) map[string]string {
		clock := newClock()
		r := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 1024, Now: clock.Now, Retention: -1})
		// The clock moves once per call so file names match between runs.
		emit(r, copyEvents(evs))
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, f := range listFiles(t, dir) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Base(f)] = string(b)
		}
		return out
	}
	base := t.TempDir()
	want := run(filepath.Join(base, "one"), func(r *Rotating, evs []*Event) {
		for _, e := range evs {
			r.Emit(e)
		}
	})
	got := run(filepath.Join(base, "batch"), func(r *Rotating, evs []*Event) { emitInBatches(r, evs, 60) })
	if len(want) < 4 {
		t.Fatalf("only %d files; the test needs rotation", len(want))
	}
	if len(got) != len(want) {
		t.Fatalf("EmitBatch made %d files, Emit %d", len(got), len(want))
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s differs:\nbatch:\n%s\none by one:\n%s", name, got[name], w)
		}
	}
	var files []string
	for name := range got {
		files = append(files, filepath.Join(base, "batch", name))
	}
	res, err := VerifyFiles(files...)
	if err != nil || res.Broken != nil || res.Events != 60 {
		t.Fatalf("VerifyFiles = %+v, %v", res, err)
	}
}

func TestRotatingEmitBatchAfterClose(t *testing.T) {
	r := openRotating(t, RotatingConfig{Dir: t.TempDir()})
	r.Close()
	r.EmitBatch(batchEvents(2))
	if r.Err() == nil {
		t.Fatal("EmitBatch on a closed sink recorded no error")
	}
}
