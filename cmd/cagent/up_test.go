package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
)

func TestAdminTokenRotate(t *testing.T) {
	state := t.TempDir()
	if _, _, err := runSecretCLI(t, "", "admin", "token", "--state-dir", state); err == nil || !strings.Contains(err.Error(), "--rotate") {
		t.Fatalf("without --rotate: %v", err)
	}
	out, _, err := runSecretCLI(t, "", "admin", "token", "--rotate", "--state-dir", state)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out)
	if !strings.HasPrefix(tok, "cagent_admin_") || len(tok) < 50 {
		t.Fatalf("token %q", tok)
	}
	b, err := os.ReadFile(adminui.TokenPath(state))
	if err != nil || bytes.Contains(b, []byte(tok)) {
		t.Fatalf("token file %q %v", b, err)
	}
	out2, _, _ := runSecretCLI(t, "", "admin", "token", "--rotate", "--state-dir", state)
	if strings.TrimSpace(out2) == tok {
		t.Error("rotate returned the same token")
	}
}

// syncBuffer is a bytes.Buffer safe for the command's writes and our reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestUpServesAdminUIAndCleansUp(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "cagent.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`dns: {upstream: [127.0.0.1:5399]}
admin: {listen: "%s"}
sandbox: {runtime: runc, workspace: %s/ws, subnet_pool: 10.209.80.0/20}
`, addr, dir)), 0o644)
	root := newRoot()
	var errOut syncBuffer
	root.SetArgs([]string{"up", "--config", cfg, "--state-dir", filepath.Join(dir, "state"), "--log-level", "error"})
	root.SetOut(&errOut)
	root.SetErr(&errOut)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	tokRE := regexp.MustCompile(`cagent_admin_[A-Za-z0-9_-]+`)
	var tok string
	deadline := time.Now().Add(30 * time.Second)
	var status struct {
		Components []adminui.ComponentStatus `json:"components"`
	}
	for {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("not up; output:\n%s\nstatus %+v", errOut.String(), status)
		}
		time.Sleep(100 * time.Millisecond)
		if tok == "" {
			tok = tokRE.FindString(errOut.String())
			continue
		}
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Post("http://"+addr+"/api/login", "application/json", strings.NewReader(`{"token":"`+tok+`"}`))
		if err != nil {
			continue
		}
		resp.Body.Close()
		req, _ := http.NewRequest("GET", "http://"+addr+"/api/status", nil)
		for _, ck := range resp.Cookies() {
			req.AddCookie(ck)
		}
		resp, err = c.Do(req)
		if err != nil {
			continue
		}
		json.NewDecoder(resp.Body).Decode(&status)
		resp.Body.Close()
		running := len(status.Components) == 3
		for _, cs := range status.Components {
			running = running && cs.State == adminui.StateRunning
		}
		if running {
			break
		}
	}
	if !strings.Contains(errOut.String(), "admin UI on http://"+addr) {
		t.Errorf("output %q", errOut.String())
	}
	id := status.Components[0].Info["id"]
	if st, err := os.Stat(filepath.Join(dir, "ws")); err != nil || !st.IsDir() {
		t.Errorf("workspace not created: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("up returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("up did not stop")
	}
	if netsetup.Exists("cagent-" + id) {
		t.Errorf("sandbox namespace cagent-%s left", id)
	}
	// The token is printed once.
	if n := len(tokRE.FindAllString(errOut.String(), -1)); n != 1 {
		t.Errorf("token printed %d times", n)
	}
}
