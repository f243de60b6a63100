package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/control"
	"github.com/cagent-dev/cagent/control/client"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClientAgainstServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	var out strings.Builder
	done := make(chan error, 1)
	go func() {
		done <- control.Run(ctx, control.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Stdout: &out, Ready: func(a net.Addr) { ready <- a }})
	}()
	addr := <-ready
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	super := strings.TrimSpace(out.String()[strings.Index(out.String(), "cagent_"):])
	c := &client.Client{URL: "http://" + addr.String() + "/", Token: super}

	// A superadmin has no tenant of its own.
	if _, err := c.TenantPath(ctx, ""); err == nil || !strings.Contains(err.Error(), "--tenant") {
		t.Fatalf("tenant path for superadmin: %v", err)
	}
	b, err := c.Do(ctx, "POST", "/api/v1/tenants", map[string]string{"name": "acme"})
	if err != nil {
		t.Fatal(err)
	}
	var ten struct{ ID string }
	json.Unmarshal(b, &ten)
	b, err = c.Do(ctx, "POST", "/api/v1/tenants/"+ten.ID+"/tokens", map[string]string{"kind": "admin", "name": "a"})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	json.Unmarshal(b, &tok)
	admin := &client.Client{URL: c.URL, Token: tok.Token}
	p, err := admin.TenantPath(ctx, "")
	if err != nil || p != "/api/v1/tenants/"+ten.ID {
		t.Fatalf("tenant path %q, %v", p, err)
	}
	_, err = admin.Do(ctx, "POST", p+"/policies", map[string]any{"entry": map[string]any{"domain": "bad domain"}})
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Code != "invalid_policy" || ae.Field != "entry.domain" || ae.RequestID == "" {
		t.Fatalf("error: %#v", err)
	}
	if _, err := (&client.Client{URL: c.URL}).Do(ctx, "GET", "/api/v1/whoami", nil); err == nil {
		t.Fatal("no token accepted")
	}
}
