//go:build linux

package dnsfilter

import (
	"bufio"
	"bytes"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trimStartup drops what start-up left resident and the filter no longer
// uses: freed heap (debug.FreeOSMemory) and this process's mappings of the
// executable's read-only pages. `cagent` is one binary for every command;
// its start-up (package initialisation of the proxy, control plane, SQLite,
// Prometheus...; policy parsing) touches megabytes of code and data the DNS
// filter never runs again, and they would otherwise stay counted in the
// filter's RSS. MADV_DONTNEED on a read-only private file mapping only
// unmaps: the pages stay in the page cache, and those the filter does use
// fault back in on first use (minor faults, no I/O). Mappings with private
// (copy-on-write) pages are left alone, since there DONTNEED would discard
// data. It returns the number of bytes of mappings advised.
func trimStartup() int {
	debug.FreeOSMemory()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0
	}
	var total int
	for _, m := range parseSmaps(smaps) {
		if m.path != exe || m.writable || m.anonKB != 0 {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno == 0 {
			total += int(m.end - m.start)
		}
	}
	return total
}

type mapping struct {
	start, end uintptr
	writable   bool
	path       string
	anonKB     int
}

// parseSmaps reads the mappings of /proc/self/smaps: a header line
// "start-end perms offset dev inode path" followed by "Key: value kB" lines.
func parseSmaps(b []byte) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.HasSuffix(f[0], ":") {
			if f[0] == "Anonymous:" && len(f) >= 2 && len(out) > 0 {
				if n, err := strconv.Atoi(f[1]); err == nil {
					out[len(out)-1].anonKB = n
				}
			}
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok || len(f) < 5 {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start || len(f[1]) < 2 {
			continue
		}
		m := mapping{start: uintptr(start), end: uintptr(end), writable: f[1][1] == 'w', anonKB: -1}
		if len(f) >= 6 {
			m.path = strings.Join(f[5:], " ")
		}
		out = append(out, m)
	}
	return out
}
