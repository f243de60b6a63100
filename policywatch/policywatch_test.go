package policywatch

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/policy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const good1 = "domains:\n  - domain: one.test\n"
const good2 = "domains:\n  - domain: two.test\n"
const bad = "domains:\n  - domain: \"*.com\"\n    bogus: 1\n"

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func writeAtomic(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, initial string) (*Watcher, string, *syncBuf, chan *policy.Policy) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cagent.yaml")
	if err := os.WriteFile(path, []byte(initial), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	applied := make(chan *policy.Policy, 10)
	w, err := Watch(context.Background(), path, slog.New(slog.NewTextHandler(logs, nil)), func(p *policy.Policy) { applied <- p })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	<-applied
	return w, path, logs, applied
}

func TestInitialParseMustSucceed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cagent.yaml")
	os.WriteFile(path, []byte(bad), 0o600)
	if _, err := Watch(context.Background(), path, nil, nil); err == nil {
		t.Fatal("Watch accepted an invalid policy")
	}
	if _, err := Watch(context.Background(), path+".missing", nil, nil); err == nil {
		t.Fatal("Watch accepted a missing file")
	}
}

func waitApplied(t *testing.T, ch chan *policy.Policy) *policy.Policy {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no reload within 5s")
		return nil
	}
}

func TestReloadOnFileChange(t *testing.T) {
	w, path, _, applied := start(t, good1)
	writeAtomic(t, path, good2) // rename over the file, as editors do
	p := waitApplied(t, applied)
	if p.Lookup("two.test") == nil || w.Current().Lookup("two.test") == nil {
		t.Fatal("new policy not applied")
	}
	if err := os.WriteFile(path, []byte(good1), 0o600); err != nil { // in-place write
		t.Fatal(err)
	}
	if p := waitApplied(t, applied); p.Lookup("one.test") == nil {
		t.Fatal("in-place edit not applied")
	}
}

func TestBadFileKeepsRunningPolicy(t *testing.T) {
	w, path, logs, applied := start(t, good1)
	os.WriteFile(path, []byte(bad), 0o600)
	err := w.Reload()
	if err == nil {
		t.Fatal("Reload accepted an invalid policy")
	}
	if w.LastError() == nil || w.Current().Lookup("one.test") == nil {
		t.Fatal("running policy not kept or error not remembered")
	}
	// Every error, with file:line:col.
	out := logs.String()
	if !strings.Contains(out, "cagent.yaml:2:") || !strings.Contains(out, "cagent.yaml:3:") {
		t.Fatalf("errors not logged with positions:\n%s", out)
	}
	select {
	case <-applied:
		t.Fatal("an invalid policy was applied")
	case <-time.After(300 * time.Millisecond):
	}
	os.WriteFile(path, []byte(good2), 0o600)
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if w.LastError() != nil || w.Current().Lookup("two.test") == nil {
		t.Fatal("good reload did not clear LastError")
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	// The watched name is a symlink into another directory, so editing the
	// target produces no event the watcher sees: only the signal reloads.
	real := filepath.Join(t.TempDir(), "real.yaml")
	if err := os.WriteFile(real, []byte(good1), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cagent.yaml")
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	w, err := Watch(context.Background(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	os.WriteFile(real, []byte(good2), 0o600)
	time.Sleep(300 * time.Millisecond)
	if w.Current().Lookup("one.test") == nil {
		t.Fatal("reloaded without a signal; the test cannot tell SIGHUP apart")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.Current().Lookup("two.test") == nil {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
