package dnsfilter

import (
	"math"
	"os"
	"runtime/debug"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"12MiB", 12 << 20, false},
		{"512KiB", 512 << 10, false},
		{"1GiB", 1 << 30, false},
		{"10MB", 10e6, false},
		{"2GB", 2e9, false},
		{"4096", 4096, false},
		{"4096B", 4096, false},
		{" 8MiB ", 8 << 20, false},
		{"0", 0, false},
		{"off", 0, false},
		{"", 0, true},
		{"-1MiB", 0, true},
		{"12 MiB", 0, true},
		{"12mib", 0, true},
		{"1.5GiB", 0, true},
		{"MiB", 0, true},
		{"9999999999999GiB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMemoryLimit(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestApplyMemoryLimit: the limit is set while serving and restored after;
// an explicit GOMEMLIMIT, or 0, leaves the runtime's limit alone.
func TestApplyMemoryLimit(t *testing.T) {
	const big = 1 << 40 // far above anything this test process uses
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	tests := []struct {
		name    string
		env     string // GOMEMLIMIT; "-" for unset
		limit   int64
		inForce int64
	}{
		{"default applies", "-", big, big},
		{"zero leaves it", "-", 0, orig},
		{"GOMEMLIMIT wins", "2GiB", big, orig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "-" {
				t.Setenv("GOMEMLIMIT", tt.env) // the runtime read it at start; only its presence matters here
			} else {
				t.Setenv("GOMEMLIMIT", "")
				unsetenv(t, "GOMEMLIMIT")
			}
			inForce, restore := applyMemoryLimit(tt.limit)
			if inForce != tt.inForce {
				t.Errorf("in force %d, want %d", inForce, tt.inForce)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.inForce {
				t.Errorf("runtime limit %d, want %d", got, tt.inForce)
			}
			restore()
			if got := debug.SetMemoryLimit(-1); got != orig {
				t.Errorf("after restore: %d, want %d", got, orig)
			}
		})
	}
	t.Run("never below what is in use", func(t *testing.T) {
		t.Setenv("GOMEMLIMIT", "")
		unsetenv(t, "GOMEMLIMIT")
		inUse := runtimeInUse()
		inForce, restore := applyMemoryLimit(1)
		defer restore()
		if inForce < inUse+minLimitHeadroom/2 || inForce > 2*inUse+minLimitHeadroom {
			t.Errorf("limit 1 B with %d in use: in force %d, want about %d", inUse, inForce, inUse+minLimitHeadroom)
		}
		if got := debug.SetMemoryLimit(-1); got != inForce {
			t.Errorf("runtime limit %d, want %d", got, inForce)
		}
	})
	if limitString(math.MaxInt64) != "none" || limitString(12<<20) != "12MiB" || limitString(1000) != "1000B" {
		t.Errorf("limitString: %q %q %q", limitString(math.MaxInt64), limitString(12<<20), limitString(1000))
	}
}

// unsetenv removes key for the rest of the test (t.Setenv has recorded the
// value to restore).
func unsetenv(t *testing.T, key string) {
	t.Helper()
	if err := os.Unsetenv(key); err != nil {
		t.Fatal(err)
	}
}
