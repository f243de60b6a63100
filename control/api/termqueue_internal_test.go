package api

import (
	"bytes"
	"testing"
)

// The browser's output queue coalesces small reads into one message,
// splits what is queued into messages the browser can read, keeps order,
// and refuses (so the session is dropped) only past its byte bound.
func TestTermQueue(t *testing.T) {
	ts := &termSession{outReady: make(chan struct{}, 1)}
	ready := func() bool {
		select {
		case <-ts.outReady:
			return true
		default:
			return false
		}
	}
	if ts.take() != nil || ready() {
		t.Fatal("empty queue: want nothing")
	}

	// A shell loop's lines: many small reads, one message.
	var want []byte
	for i := 0; i < 2000; i++ {
		line := []byte("line-" + string(rune('a'+i%26)) + "\r\n")
		if !ts.queue(line) {
			t.Fatalf("line %d refused", i)
		}
		want = append(want, line...)
	}
	if !ready() {
		t.Fatal("queued output not signalled")
	}
	if got := ts.take(); !bytes.Equal(got, want) {
		t.Fatalf("take = %d bytes, want the %d queued, in order", len(got), len(want))
	}
	if ready() || ts.take() != nil {
		t.Fatal("queue not empty after take")
	}

	// More than one message's worth: split, in order, re-signalled.
	big := bytes.Repeat([]byte("0123456789abcdef"), termMessageBytes/16*2+10)
	ts.queue(big)
	var got []byte
	for n := 0; ready(); n++ {
		b := ts.take()
		if len(b) > termMessageBytes {
			t.Fatalf("message of %d bytes, want at most %d", len(b), termMessageBytes)
		}
		got = append(got, b...)
		if n > 10 {
			t.Fatal("take keeps signalling")
		}
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("reassembled %d bytes, want the %d queued", len(got), len(big))
	}

	// Past the bound: refused, and what was queued is kept.
	chunk := bytes.Repeat([]byte("x"), 16<<10)
	n := 0
	for ts.queue(chunk) {
		n++
		if n > termQueueBytes/len(chunk) {
			t.Fatal("queue grew past its bound")
		}
	}
	if n != termQueueBytes/len(chunk) {
		t.Fatalf("accepted %d chunks, want %d", n, termQueueBytes/len(chunk))
	}
	total := 0
	for b := ts.take(); b != nil; b = ts.take() {
		total += len(b)
	}
	if total != n*len(chunk) {
		t.Fatalf("drained %d bytes, want %d", total, n*len(chunk))
	}
}
