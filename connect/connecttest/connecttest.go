// Package connecttest runs a connected data plane in-process for tests:
// `cagent up --control-plane` as the real daemon with a runc sandbox on a
// fake internet, managed by a connect.Client. It needs root and runc.
package connecttest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/connect"
	"github.com/cagent-dev/cagent/daemon"
	"github.com/cagent-dev/cagent/internal/fakeinet"
)

// Options configure Start.
type Options struct {
	URL, Token string
	// SubnetPool keeps concurrently running test packages apart.
	SubnetPool string
	// Now is the client's clock (nil: time.Now).
	Now func() time.Time
}

// Start boots the data plane and stops it in t.Cleanup.
func Start(t *testing.T, o Options) (*daemon.Daemon, *connect.Client, *fakeinet.Internet) {
	t.Helper()
	in := fakeinet.Start(t, fakeinet.Options{})
	dir := t.TempDir()
	ws := filepath.Join(dir, "ws")
	if err := os.Mkdir(ws, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(ws, 0o777) // past the umask: the sandbox user writes here
	base := filepath.Join(dir, "cagent.yaml")
	yaml := fmt.Sprintf("dns:\n  upstream: [%s]\nsandbox:\n  runtime: runc\n  workspace: %s\n  subnet_pool: %s\n", in.DNS, ws, o.SubnetPool)
	if err := os.WriteFile(base, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := connect.New(connect.Config{URL: o.URL, Token: o.Token, BasePath: base, StateDir: filepath.Join(dir, "state"),
		Heartbeat: time.Second, BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second, Now: o.Now})
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(daemon.Config{PolicyPath: c.PolicyPath(), StateDir: filepath.Join(dir, "state"), Agent: "box-1",
		Upstreams: []netip.AddrPort{in.DNS}, RootCAs: in.CAPool, HealthInterval: 100 * time.Millisecond, Audit: c, Secrets: c})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := d.Boot(ctx); err != nil {
		cancel()
		d.Close()
		c.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, d) }()
	t.Cleanup(func() {
		cancel()
		<-done
		d.Close()
		c.Close()
	})
	return d, c, in
}
