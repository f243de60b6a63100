//go:build linux

package dnsfilter

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestParseSmaps(t *testing.T) {
	in := `00400000-00800000 r-xp 00000000 fe:00 123 /usr/bin/cagent
Size:               4096 kB
Rss:                1024 kB
Anonymous:             0 kB
00800000-00900000 r--p 00400000 fe:00 123 /usr/bin/cagent
Anonymous:             8 kB
00900000-00a00000 rw-p 00500000 fe:00 123 /usr/bin/cagent
Anonymous:            64 kB
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 
Anonymous:             4 kB
7f0000002000-7f0000003000 r--p 00000000 fe:00 9 /path with spaces/x
garbage line
`
	got := parseSmaps([]byte(in))
	want := []mapping{
		{start: 0x400000, end: 0x800000, path: "/usr/bin/cagent", anonKB: 0},
		{start: 0x800000, end: 0x900000, path: "/usr/bin/cagent", anonKB: 8},
		{start: 0x900000, end: 0xa00000, writable: true, path: "/usr/bin/cagent", anonKB: 64},
		{start: 0x7f0000000000, end: 0x7f0000001000, writable: true, anonKB: 4},
		// No Anonymous line: unknown, so never advised.
		{start: 0x7f0000002000, end: 0x7f0000003000, path: "/path with spaces/x", anonKB: -1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestTrimStartup: the test binary's read-only pages are unmapped from this
// process (RssFile drops) and the program keeps running correctly (they
// fault back in).
func TestTrimStartup(t *testing.T) {
	before := rssFileKB(t)
	if n := trimStartup(); n <= 0 {
		t.Fatalf("trimStartup advised %d bytes, want > 0", n)
	}
	after := rssFileKB(t)
	if after >= before {
		t.Errorf("RssFile %d kB -> %d kB, want a drop", before, after)
	}
	// Code and read-only data still work after the unmapping.
	if s := strconv.Itoa(12345) + strings.Repeat("x", 3); s != "12345xxx" {
		t.Fatalf("got %q", s)
	}
}

func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssFile:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
