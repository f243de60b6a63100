package dnsfilter

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
)

// DefaultMemoryLimit is the soft memory limit `cagent dns` gives the Go
// runtime (runtime/debug.SetMemoryLimit) unless GOMEMLIMIT is set. Without
// it the heap may grow to twice the live data (GOGC=100) before a collection
// and freed pages go back to the kernel only slowly, so a flood of distinct
// names left RSS several megabytes above what the filter keeps live. With
// it the runtime collects and returns memory before its total (heap,
// stacks, runtime metadata) crosses the limit. The filter's live data is
// bounded (cache and templates by bytes, in-flight queries by MaxInflight),
// and the default leaves room for all of it; a limit below the live data
// would make the collector run continuously (the runtime caps that at about
// half the CPU), which is why it is soft and can be raised.
const DefaultMemoryLimit = 12 << 20

// ParseMemoryLimit parses a size as GOMEMLIMIT writes it: a whole number of
// bytes with an optional unit B, KiB, MiB, GiB (or KB, MB, GB, taken as
// powers of 1000). "0" and "off" mean no limit (0).
func ParseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "off" || s == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("memory limit %q: want bytes with an optional unit (KiB, MiB, GiB), or off", s)
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("memory limit too large")
	}
	return n * mult, nil
}

// minLimitHeadroom is the least room the limit leaves above what the
// runtime has in use once start-up is over: a policy of thousands of
// domains is live data too, and a limit at or below the live data would
// have the collector run back to back. With the bench's policy the runtime
// has ~8.5 MiB in use then (much of it never touched: GC metadata, the
// memory profiler's bucket table), so the 12 MiB default stands.
const minLimitHeadroom = 3 << 20

// applyMemoryLimit sets the runtime's soft memory limit to limit, or to
// what the runtime has in use plus minLimitHeadroom if that is more, unless
// GOMEMLIMIT is in the environment (an operator's explicit setting wins) or
// limit is 0. Call it once start-up's garbage is collected. It returns the
// limit in force (math.MaxInt64: none) and a func that restores the
// previous one.
func applyMemoryLimit(limit int64) (inForce int64, restore func()) {
	prev := debug.SetMemoryLimit(-1)
	if _, set := os.LookupEnv("GOMEMLIMIT"); set || limit <= 0 {
		return prev, func() {}
	}
	limit = max(limit, runtimeInUse()+minLimitHeadroom)
	debug.SetMemoryLimit(limit)
	return limit, func() { debug.SetMemoryLimit(prev) }
}

// runtimeInUse is the memory the runtime counts against its limit: all it
// has mapped less the heap pages it returned to the kernel.
func runtimeInUse() int64 {
	s := []rtmetrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	rtmetrics.Read(s)
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}

// limitString is how the start-up log line shows the limit in force.
func limitString(limit int64) string {
	if limit <= 0 || limit == math.MaxInt64 {
		return "none"
	}
	if limit%(1<<20) == 0 {
		return strconv.FormatInt(limit>>20, 10) + "MiB"
	}
	return strconv.FormatInt(limit, 10) + "B"
}
