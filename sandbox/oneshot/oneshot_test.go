package oneshot

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/sandbox/firewall/firewalltest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.Cleanup(firewalltest.Exit)) }

func TestAuditPath(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 4, 5, 0, time.FixedZone("x", 3600))
	if got, want := AuditPath("/s", "bot", now, 42), "/s/audit/run-bot.jsonl"; got != want {
		t.Errorf("named: %q, want %q", got, want)
	}
	// Unnamed runs get distinct names (UTC time, pid, randomness), so
	// concurrent runs never share a hash chain.
	re := regexp.MustCompile(`^/s/audit/run-20261125T090405Z-42-[0-9a-f]{8}\.jsonl$`)
	a, b := AuditPath("/s", "", now, 42), AuditPath("/s", "", now, 42)
	if !re.MatchString(a) || !re.MatchString(b) {
		t.Errorf("unnamed: %q %q, want %v", a, b, re)
	}
	if a == b {
		t.Errorf("two unnamed runs share %q", a)
	}
}

func TestLockAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run-x.jsonl")
	unlock, err := lockAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockAudit(path); err == nil || !strings.Contains(err.Error(), "in use by another run") {
		t.Fatalf("second lock: %v, want 'in use'", err)
	}
	unlock()
	unlock2, err := lockAudit(path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

// TestRunErrors: configuration errors are reported before any file is
// written under the state directory.
func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("domainz: []\n"), 0o644)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("domains:\n  - domain: example.test\n"), 0o644)
	tests := []struct {
		name       string
		cfg        Config
		want       string
		wantStderr string
	}{
		{"invalid policy", Config{PolicyFile: bad}, "invalid policy " + bad + ": fix the errors above", "domainz"},
		{"missing policy", Config{PolicyFile: filepath.Join(dir, "nope.yaml")}, "nope.yaml", ""},
		{"bad upstream", Config{PolicyFile: good, UpstreamDNS: []string{"not an ip"}}, `--upstream-dns "not an ip"`, ""},
		{"missing workspace", Config{PolicyFile: good, Runtime: "runc", Workspace: filepath.Join(dir, "nows")}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(dir, "state-"+strings.ReplaceAll(tc.name, " ", "-"))
			tc.cfg.Args, tc.cfg.StateDir = []string{"true"}, state
			var stderr bytes.Buffer
			tc.cfg.Stderr = &stderr
			code, err := Run(context.Background(), tc.cfg)
			if err == nil || code != 0 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %d, %v: want error containing %q", code, err, tc.want)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.wantStderr)
			}
			if _, err := os.Stat(state); !os.IsNotExist(err) {
				t.Errorf("state dir created before the config was validated: %v", err)
			}
		})
	}
}

// TestRunNamedAgent: a named run writes run-<agent>.jsonl (a valid chain)
// and keeps the agent's proxy state, and it passes the exit status through.
func TestRunNamedAgent(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	// A loopback upstream nothing listens on: the command makes no
	// lookups, and nothing may query the host's resolver.
	os.WriteFile(pol, []byte("dns:\n  upstream: [127.0.0.77:5300]\ndomains:\n  - domain: example.test\n"), 0o644)
	state := filepath.Join(dir, "state")
	var out bytes.Buffer
	code, err := Run(context.Background(), Config{
		PolicyFile: pol, Args: []string{"/bin/sh", "-c", "echo hi; exit 5"}, Runtime: "runc",
		StateDir: state, Agent: "bot", Stdout: &out, Stderr: &out,
		Signals: make(chan os.Signal), // not this process's signals
	})
	if err != nil || code != 5 {
		t.Fatalf("Run = %d, %v (%s), want 5", code, err, out.String())
	}
	if !strings.Contains(out.String(), "hi") {
		t.Errorf("output %q", out.String())
	}
	log := filepath.Join(state, "audit", "run-bot.jsonl")
	if res, err := audit.VerifyFiles(log); err != nil {
		t.Errorf("verify %s: %v %+v", log, err, res)
	}
	if _, err := os.Stat(filepath.Join(state, "agents", "bot")); err != nil {
		t.Errorf("named agent's proxy state: %v", err)
	}
	// The lock is released: a second run of the agent may start.
	if code, err := Run(context.Background(), Config{PolicyFile: pol, Args: []string{"true"}, Runtime: "runc",
		StateDir: state, Agent: "bot", Signals: make(chan os.Signal)}); err != nil || code != 0 {
		t.Errorf("second run = %d, %v", code, err)
	}
}
