package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/policy"
)

func TestAuditFilesRotateAndFollowPolicy(t *testing.T) {
	dir := t.TempDir()
	p, err := policy.Parse("t.yaml", []byte("audit: {max_size: 2KiB, retention: 1h}\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	a, err := openAuditFiles(dir, p, clock)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		a.Emit(&audit.Event{Type: audit.TypeHTTP, Host: "example.com", Path: "/" + strings.Repeat("x", 50), Status: 200 + i})
	}
	files, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if len(files) < 2 {
		t.Fatalf("no rotation at 2KiB: %v", files)
	}
	res, err := audit.VerifyFiles(files...)
	if err != nil || res.Broken != nil || res.Events != 50 {
		t.Fatalf("chain: %+v %v", res, err)
	}
	// A reload raising the limit stops the rotation.
	p2, _ := policy.Parse("t.yaml", []byte("audit: {max_size: 1MiB}\n"))
	a.setPolicy(p2)
	for range 50 {
		a.Emit(&audit.Event{Type: audit.TypeHTTP, Path: "/" + strings.Repeat("y", 50)})
	}
	after, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if len(after) > len(files)+1 {
		t.Errorf("still rotating after the limit was raised: %d -> %d files", len(files), len(after))
	}
	a.Close()
}

func TestAuditFilesSetBrokenChainAside(t *testing.T) {
	dir := t.TempDir()
	a, err := openAuditFiles(dir, nil, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	a.Emit(&audit.Event{Type: audit.TypeAdmin, Action: "one"})
	a.Emit(&audit.Event{Type: audit.TypeAdmin, Action: "two"})
	a.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	b, _ := os.ReadFile(files[0])
	os.WriteFile(files[0], []byte(strings.Replace(string(b), `"one"`, `"0ne"`, 1)), 0o600)

	a, err = openAuditFiles(dir, nil, time.Now)
	if err != nil {
		t.Fatalf("a tampered file must not stop the daemon: %v", err)
	}
	a.Close()
	if aside, _ := filepath.Glob(files[0] + ".broken-*"); len(aside) != 1 {
		t.Fatalf("tampered file not kept aside: %v", aside)
	}
	now, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	res, err := audit.VerifyFiles(now...)
	if err != nil || res.Broken != nil || res.Events != 1 {
		t.Fatalf("new chain: %+v %v", res, err)
	}
}

func TestEnsureWorkspace(t *testing.T) {
	testutil.RequireRoot(t) // chown
	dir := filepath.Join(t.TempDir(), "a", "ws")
	if err := ensureWorkspace(dir, "1000:1001"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 1000 || sys.Gid != 1001 {
		t.Errorf("owner %d:%d", sys.Uid, sys.Gid)
	}
	// An existing directory is left alone.
	os.Chmod(dir, 0o700)
	if err := ensureWorkspace(dir, "0:0"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 || st.Sys().(*syscall.Stat_t).Uid != 1000 {
		t.Error("existing workspace changed")
	}
}

func TestSafeToEmpty(t *testing.T) {
	tmp := t.TempDir()
	for _, tc := range []struct {
		ws, state string
		ok        bool
	}{
		{"/", "/var/lib/cagent", false},
		{"/home", "/var/lib/cagent", false},
		{"/tmp/", "/var/lib/cagent", false},
		{"/var/lib", "/var/lib/cagent", false},
		{tmp, filepath.Join(tmp, "state"), false},
		{filepath.Join(tmp, "ws"), filepath.Join(tmp, "state"), true},
		{"/srv/agent/ws", "/var/lib/cagent", true},
	} {
		err := safeToEmpty(tc.ws, tc.state)
		if (err == nil) != tc.ok {
			t.Errorf("safeToEmpty(%q, %q) = %v", tc.ws, tc.state, err)
		}
	}
}
