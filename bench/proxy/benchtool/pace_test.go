package main

import (
	"net"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/bench/rawproto"
	"golang.org/x/sys/unix"
)

// TestPace checks that a paced opening's rate line becomes the
// connection's pacing cap, which the paced bulk rows of run.sh rely on,
// and that a bad line is refused.
func TestPace(t *testing.T) {
	for _, tc := range []struct {
		line string
		want int // bytes per second; 0: pace must fail
	}{
		{"12.5\n", 12_500_000},
		{"312.5\n", 312_500_000},
		{"0\n", 0},
		{"-3\n", 0},
		{"fast\n", 0},
		{strings.Repeat("1", 20) + "\n", 0},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("p" + tc.line))
		msg, perr := rawproto.ReadOpening(s)
		if perr == nil {
			perr = pace(s, msg)
		}
		var got int
		rc, _ := s.(*net.TCPConn).SyscallConn()
		rc.Control(func(fd uintptr) {
			got, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE)
		})
		c.Close()
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tc.want == 0 && perr == nil:
			t.Errorf("pace(%q) accepted a bad rate", tc.line)
		case tc.want != 0 && (perr != nil || got != tc.want):
			t.Errorf("pace(%q) = %v, pacing rate %d; want %d", tc.line, perr, got, tc.want)
		}
	}
}
