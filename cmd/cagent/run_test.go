package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/internal/testutil"
)

func execCagent(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestRunCommandErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("domainz: []\n"), 0o644)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("domains:\n  - domain: example.test\n"), 0o644)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"invalid policy", []string{"run", "--config", bad, "--", "true"}, "invalid policy"},
		{"missing policy", []string{"run", "--config", filepath.Join(dir, "nope.yaml"), "--", "true"}, "nope.yaml"},
		{"no command", []string{"run", "--config", good}, "requires at least 1 arg"},
		{"bad upstream", []string{"run", "--config", good, "--upstream-dns", "not an ip", "--", "true"}, "--upstream-dns"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := execCagent(t, tc.args...)
			if err == nil || !strings.Contains(err.Error()+out, tc.want) {
				t.Fatalf("err %v, output %q: want %q", err, out, tc.want)
			}
		})
	}
}

func TestRunCommand(t *testing.T) {
	dir, pol := runcPolicy(t)
	ws := filepath.Join(dir, "ws")
	state := filepath.Join(dir, "state")
	t.Run("workspace missing", func(t *testing.T) {
		_, err := execCagent(t, "run", "--config", pol, "--state-dir", state, "--runtime", "runc", "--workspace", ws, "--", "true")
		if err == nil || !strings.Contains(err.Error(), "workspace directory does not exist") {
			t.Fatalf("err = %v", err)
		}
	})
	os.Mkdir(ws, 0o777)
	os.Chmod(ws, 0o777)
	t.Run("exit status", func(t *testing.T) {
		out, err := execCagent(t, "run", "--config", pol, "--state-dir", state, "--runtime", "runc", "--workspace", ws,
			"--", "/bin/sh", "-c", `echo "$HTTPS_PROXY" > /workspace/proxy; exit 3`)
		var ee exitError
		if !errors.As(err, &ee) || ee.code != 3 {
			t.Fatalf("err = %v (%s), want exit status 3", err, out)
		}
		b, _ := os.ReadFile(filepath.Join(ws, "proxy"))
		if !strings.HasPrefix(string(b), "http://10.209.") || !strings.HasSuffix(strings.TrimSpace(string(b)), ":3128") {
			t.Errorf("HTTPS_PROXY inside = %q", b)
		}
	})
	t.Run("audit events and no per-run leftovers", func(t *testing.T) {
		files, _ := filepath.Glob(filepath.Join(state, "audit", "run-*.jsonl"))
		if len(files) != 1 {
			t.Fatalf("audit files %v, want one", files)
		}
		b, err := os.ReadFile(files[0])
		if err != nil || !strings.Contains(string(b), `"type":"sandbox"`) || !strings.Contains(string(b), `"exit_code":"3"`) {
			t.Errorf("audit log: %v\n%s", err, b)
		}
		ents, _ := os.ReadDir(filepath.Join(state, "agents"))
		if len(ents) != 0 {
			t.Errorf("ephemeral agent state left: %v", ents)
		}
	})
	t.Run("gc", func(t *testing.T) {
		if out, err := execCagent(t, "gc", "--state-dir", state); err != nil || out != "" {
			t.Errorf("gc after clean runs: %q %v", out, err)
		}
	})
}

// TestRunConcurrent: unnamed runs can overlap; two runs of one --agent
// cannot (the second fails clearly rather than breaking the audit chain).
func TestRunConcurrent(t *testing.T) {
	dir, pol := runcPolicy(t)
	state := filepath.Join(dir, "state")
	run := func(agent string, errs chan<- error) {
		args := []string{"run", "--config", pol, "--state-dir", state, "--runtime", "runc"}
		if agent != "" {
			args = append(args, "--agent", agent)
		}
		_, err := execCagent(t, append(args, "--", "/bin/sleep", "1")...)
		errs <- err
	}
	errs := make(chan error, 2)
	go run("", errs)
	go run("", errs)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("unnamed concurrent run: %v", err)
		}
	}
	go run("same", errs)
	go run("same", errs)
	var failed []error
	for range 2 {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0].Error(), "in use") {
		t.Errorf("two runs of one agent: errors %v, want exactly one 'in use'", failed)
	}
	files, _ := filepath.Glob(filepath.Join(state, "audit", "*.jsonl"))
	for _, f := range files {
		if out, err := execCagent(t, "audit", "verify", f); err != nil {
			t.Errorf("audit verify %s: %v %s", f, err, out)
		}
	}
}

// runcPolicy skips unless root with runc, and writes a policy whose DNS
// upstream is a loopback address nothing listens on: the commands make no
// lookups, and nothing may query the host's resolver. It returns the test's
// directory and the policy's path.
func runcPolicy(t *testing.T) (dir, pol string) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	dir = t.TempDir()
	pol = filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte("dns:\n  upstream: [127.0.0.77:5300]\ndomains:\n  - domain: example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, pol
}
