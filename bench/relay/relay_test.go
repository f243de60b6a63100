package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/bench/rawproto"
	"github.com/cagent-dev/cagent/internal/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ioTimeout bounds every read and write of a test, so that a relay that
// loses bytes fails the test instead of hanging it.
const ioTimeout = 20 * time.Second

// fill writes the test pattern for stream offset off into b: a period of
// 251 bytes, so a lost, repeated or reordered block of any power-of-two
// size shows.
func fill(b []byte, off int64) {
	for i := range b {
		b[i] = byte((off + int64(i)) % 251)
	}
}

// checkStream reads n bytes from r and reports the first that differs from
// the pattern.
func checkStream(r io.Reader, n int64) error {
	buf, want := make([]byte, 64<<10), make([]byte, 64<<10)
	for off := int64(0); off < n; {
		k, err := r.Read(buf[:min(int64(len(buf)), n-off)])
		fill(want[:k], off)
		if i := firstDiff(buf[:k], want[:k]); i >= 0 {
			return fmt.Errorf("byte %d is %d, want %d", off+int64(i), buf[i], want[i])
		}
		off += int64(k)
		if err != nil && off < n {
			return fmt.Errorf("after %d of %d bytes: %w", off, n, err)
		}
	}
	return nil
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func writeStream(w io.Writer, n int64) error {
	buf := make([]byte, 32<<10)
	for off := int64(0); off < n; {
		k := min(int64(len(buf)), n-off)
		fill(buf[:k], off)
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// patternUpstream accepts one connection, checks the opening message, then
// sends down bytes of the pattern while checking that up bytes of it arrive.
func patternUpstream(t *testing.T, down, up int64) (addr string, result <-chan error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			res <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		if hdr, err := rawproto.ReadOpening(c); err != nil || string(hdr) != "d" {
			res <- fmt.Errorf("opening message %q, %v", hdr, err)
			return
		}
		upErr := make(chan error, 1)
		go func() { upErr <- checkStream(c, up) }()
		res <- errors.Join(writeStream(c, down), <-upErr)
	}()
	return ln.Addr().String(), res
}

// TestRelayIsFaithful relays a pattern both ways through each mode: the
// throughput run.sh reports is only worth reading if every byte arrives,
// once and in order.
func TestRelayIsFaithful(t *testing.T) {
	const down, up = 24 << 20, 6 << 20
	for _, mode := range []string{"splice", "sockmap", "sockmap-strp"} {
		t.Run(mode, func(t *testing.T) {
			if mode != "splice" {
				testutil.RequireRoot(t)
			}
			target, upstream := patternUpstream(t, down, up)
			r, err := newRelay(mode, target)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- r.serve(ctx, ln) }()
			defer func() {
				cancel()
				if err := <-served; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()

			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := c.Write([]byte{'d'}); err != nil {
				t.Fatal(err)
			}
			// The upload starts once the download has: a client that sends
			// more right behind its opening message races the hand-off
			// (see package doc), which benchtool's client never does.
			started := make(chan struct{})
			var once sync.Once
			begin := func() { once.Do(func() { close(started) }) }
			sent := make(chan error, 1)
			go func() {
				<-started
				sent <- writeStream(c, up)
			}()
			err = checkStream(readerFunc(func(b []byte) (int, error) {
				n, err := c.Read(b)
				begin()
				return n, err
			}), down)
			begin()
			if err != nil {
				t.Errorf("download: %v", err)
			}
			if err := <-sent; err != nil {
				t.Errorf("upload write: %v", err)
			}
			if err := <-upstream; err != nil {
				t.Errorf("upstream: %v", err)
			}
		})
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

func TestUnknownMode(t *testing.T) {
	if _, err := newRelay("copy", "127.0.0.1:1"); err == nil {
		t.Fatal("newRelay accepted an unknown mode")
	}
}
