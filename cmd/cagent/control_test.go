package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// The throttle and quota settings of `cagent control serve` reach the
// server: with --auth-fail-limit 2, the third wrong token from one address
// is answered 429 before it is looked up.
func TestControlServeAuthFailLimitFlag(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs([]string{"control", "serve", "--data-dir", dir, "--db", "sqlite:" + filepath.Join(dir, "c.db"),
			"--listen", addr, "--auth-fail-limit", "2", "--auth-fail-window", "1h", "--quota-acls", "3"})
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		done <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	base := "http://" + addr + "/api/v1"
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane not up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var got []int
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, base+"/whoami", nil)
		req.Header.Set("Authorization", "Bearer cat_wrong-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got = append(got, resp.StatusCode)
	}
	if got[0] != http.StatusUnauthorized || got[1] != http.StatusUnauthorized || got[2] != http.StatusTooManyRequests {
		t.Fatalf("statuses %v, want [401 401 429]", got)
	}
}
