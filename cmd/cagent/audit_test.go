package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
)

// writeAuditDir writes n events through a Rotating sink that rotates often,
// and returns the directory and its files in order.
func writeAuditDir(t *testing.T, n int) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	r, err := audit.OpenRotating(audit.RotatingConfig{Dir: dir, MaxSize: 500, Retention: -1, Now: func() time.Time {
		now = now.Add(time.Second)
		return now
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r.Emit(&audit.Event{Type: audit.TypeHTTP, Decision: audit.Allow, Host: fmt.Sprintf("h%d.example.com", i)})
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if len(files) < 3 {
		t.Fatalf("only %d files", len(files))
	}
	return dir, files
}

func TestAuditVerify(t *testing.T) {
	dir, files := writeAuditDir(t, 12)
	m := len(files)
	out, errOut, code := runCagent(t, "audit", "verify", dir)
	if want := fmt.Sprintf("OK: 12 events in %d files\n", m); code != 0 || out != want || errOut != "" {
		t.Errorf("verify DIR: code %d, out %q, want %q, stderr %q", code, out, want, errOut)
	}
	out, _, code = runCagent(t, append([]string{"audit", "verify"}, files...)...)
	if code != 0 || !strings.HasPrefix(out, "OK: 12 events in") {
		t.Errorf("verify FILES: code %d, %q", code, out)
	}
	// Files are checked in the order given.
	out, _, code = runCagent(t, "audit", "verify", files[1], files[0])
	if want := files[0] + ":1: prev does not match the last line of " + files[1]; code != 1 || !strings.HasPrefix(out, want) {
		t.Errorf("out of order: code %d, out %q, want %q", code, out, want)
	}
	// Leaving out older files is allowed with a note, refused with --strict.
	out, _, code = runCagent(t, "audit", "verify", files[1], files[2])
	if code != 0 || !strings.Contains(out, "note: the first event continues") {
		t.Errorf("anchored: code %d, %q", code, out)
	}
	out, _, code = runCagent(t, "audit", "verify", "--strict", files[1], files[2])
	if code != 1 || !strings.HasPrefix(out, files[1]+":1: the chain does not start here") {
		t.Errorf("--strict: code %d, %q", code, out)
	}
	if _, _, code = runCagent(t, "audit", "verify", "--strict", dir); code != 0 {
		t.Error("--strict on a whole chain failed")
	}
	// Leaving out a middle file breaks the chain.
	out, _, code = runCagent(t, "audit", "verify", files[0], files[2])
	if code != 1 || !strings.HasPrefix(out, files[2]+":1: ") {
		t.Errorf("missing middle file: code %d, %q", code, out)
	}
	// An edited line is reported as FILE:LINE of the line after it.
	data, _ := os.ReadFile(files[1])
	edited := strings.Replace(string(data), "example.com", "evil.test", 1)
	if err := os.WriteFile(files[1], []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code = runCagent(t, "audit", "verify", dir)
	if !strings.Contains(string(data[:strings.Index(string(data), "\n")]), "example.com") {
		t.Fatal("test setup: first line has no host")
	}
	if want := files[1] + ":2: prev does not match the hash of line 1"; code != 1 || !strings.HasPrefix(out, want) {
		t.Errorf("edited: code %d, out %q, want prefix %q", code, out, want)
	}
	os.WriteFile(files[1], data, 0o600)
	// A truncated last line.
	last := files[m-1]
	ld, _ := os.ReadFile(last)
	os.WriteFile(last, ld[:len(ld)-2], 0o600)
	n := strings.Count(string(ld), "\n")
	out, _, code = runCagent(t, "audit", "verify", dir)
	if want := fmt.Sprintf("%s:%d: truncated line", last, n); code != 1 || !strings.HasPrefix(out, want) {
		t.Errorf("truncated: code %d, out %q, want %q", code, out, want)
	}
	// Errors that are not about the chain.
	_, errOut, code = runCagent(t, "audit", "verify", filepath.Join(dir, "missing.jsonl"))
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: %d %q", code, errOut)
	}
	_, errOut, code = runCagent(t, "audit", "verify", t.TempDir())
	if code != 1 || !strings.Contains(errOut, "no *.jsonl files") {
		t.Errorf("empty dir: %d %q", code, errOut)
	}
	if _, errOut, code = runCagent(t, "audit", "verify"); code != 1 || !strings.Contains(errOut, "requires at least 1 arg") {
		t.Errorf("no args: %d %q", code, errOut)
	}
}
