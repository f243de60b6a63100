package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDNSMemoryLimitFlag: a malformed --memory-limit is refused before the
// filter starts, naming the flag.
func TestDNSMemoryLimitFlag(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte("domains:\n  - domain: example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"12 MiB", "lots", "-5MiB"} {
		out, err := execCagent(t, "dns", "--config", pol, "--state-dir", dir, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
			"--memory-limit="+bad)
		if err == nil || !strings.Contains(out+err.Error(), "--memory-limit") {
			t.Errorf("--memory-limit %q: err %v, output %q; want an error naming the flag", bad, err, out)
		}
	}
}
