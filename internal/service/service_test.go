package service

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/cagent-dev/cagent/audit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestLogger(t *testing.T) {
	for _, tc := range []struct{ format, want string }{{"json", `"msg":"hi"`}, {"text", "msg=hi"}, {"", "msg=hi"}} {
		var b bytes.Buffer
		Logger(tc.format, &b).Info("hi")
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("format %q: %q lacks %q", tc.format, b.String(), tc.want)
		}
	}
}

func TestWatchPolicyLogsEachError(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("dns:\n  answer: sideways\ndomains: [{domain: 'http://x'}]\n"), 0o600)
	var logs bytes.Buffer
	_, err := WatchPolicy(context.Background(), bad, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err == nil || !strings.Contains(err.Error(), "policy "+bad) {
		t.Fatalf("err = %v, want one naming the file", err)
	}
	if n := strings.Count(logs.String(), "invalid policy"); n < 2 {
		t.Fatalf("%d policy errors logged, want one line each:\n%s", n, logs.String())
	}

	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("domains: [{domain: allowed.test}]\n"), 0o600)
	w, err := WatchPolicy(context.Background(), good, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
}

func TestOpenAudit(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name       string
		cfg        AuditConfig
		wantPath   string
		wantStdout int    // chained lines on stdout
		file       string // where the chained lines must be ("" = none)
		rotating   bool
	}{
		{name: "file", cfg: AuditConfig{File: filepath.Join(dir, "a.jsonl")}, wantPath: filepath.Join(dir, "a.jsonl"), file: filepath.Join(dir, "a.jsonl")},
		{name: "file and json stdout", cfg: AuditConfig{File: filepath.Join(dir, "b.jsonl"), JSON: true}, wantPath: filepath.Join(dir, "b.jsonl"), wantStdout: 3, file: filepath.Join(dir, "b.jsonl")},
		{name: "rotating", cfg: AuditConfig{Dir: filepath.Join(dir, "rot"), MaxSize: 1 << 20}, wantPath: filepath.Join(dir, "rot"), rotating: true},
		{name: "dash is stdout", cfg: AuditConfig{File: "-", DashIsStdout: true, JSON: true}, wantPath: "-", wantStdout: 3},
		{name: "dash is a file", cfg: AuditConfig{File: "-"}, wantPath: "-", file: "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir()) // "dash is a file" writes ./-
			var stdout syncBuf
			tc.cfg.Stdout = &stdout
			a, err := OpenAudit(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if a.Path() != tc.wantPath {
				t.Errorf("Path = %q, want %q", a.Path(), tc.wantPath)
			}
			for i := 0; i < 3; i++ {
				a.Emit(&audit.Event{Type: audit.TypeDNS, QName: "x.test"})
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			res, err := audit.Verify(strings.NewReader(stdout.String()), "")
			if err != nil || res.Broken != nil || res.Lines != tc.wantStdout {
				t.Errorf("stdout: %+v %v, want %d chained lines", res, err, tc.wantStdout)
			}
			files := []string{}
			if tc.file != "" {
				files = append(files, tc.file)
			}
			if tc.rotating {
				files, _ = filepath.Glob(filepath.Join(tc.cfg.Dir, "audit-*.jsonl"))
			}
			if len(files) > 0 {
				cr, err := audit.VerifyFiles(files...)
				if err != nil || cr.Broken != nil || cr.Events != 3 {
					t.Errorf("files %v: %+v %v, want 3 chained events", files, cr, err)
				}
			}
		})
	}
}

func TestOpenAuditRefusesBrokenChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	os.WriteFile(path, []byte(`{"type":"dns","prev":"not the start"}`+"\n"), 0o600)
	if _, err := OpenAudit(AuditConfig{File: path}); err == nil {
		t.Fatal("a broken chain was extended")
	}
}

func TestAdmin(t *testing.T) {
	ready := NewFlag("not serving yet")
	var reloadErr error
	srv := NewAdmin(AdminConfig{Metrics: NewRegistry(), Ready: ready.Err, LastReload: func() error { return reloadErr }})
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	steps := []struct {
		name       string
		set        func()
		path       string
		code       int
		bodyPrefix string
	}{
		{"healthz", func() {}, "/healthz", 200, "ok\n"},
		{"not ready", func() {}, "/readyz", http.StatusServiceUnavailable, "not serving yet\n"},
		{"ready", func() { ready.Set(true) }, "/readyz", 200, "ready\n"},
		{"reload failed", func() { reloadErr = errors.New("bad yaml") }, "/readyz", 200, "ready (last policy reload failed: bad yaml)\n"},
		{"metrics", func() {}, "/metrics", 200, "# HELP go_"},
	}
	for _, s := range steps {
		s.set()
		code, body := get(s.path)
		if code != s.code || !strings.HasPrefix(body, s.bodyPrefix) {
			t.Errorf("%s: %d %q, want %d %q", s.name, code, body, s.code, s.bodyPrefix)
		}
	}
}
