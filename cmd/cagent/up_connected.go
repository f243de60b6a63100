package main

import (
	"context"
	"fmt"
	"io"

	"github.com/cagent-dev/cagent/connect"
	"github.com/cagent-dev/cagent/daemon"
)

// upConnected holds the connected-mode flags of `cagent up`.
type upConnected struct {
	url, token string
	noTerminal bool
	client     *connect.Client
}

// prepare switches cfg to connected mode when --control-plane is given or
// the policy says mode: connected: the daemon then runs the merged policy
// the control plane maintains, takes secrets from it and spools audit
// events to it.
func (u *upConnected) prepare(cfg *daemon.Config, out io.Writer) error {
	cc := connect.Config{BasePath: cfg.PolicyPath, StateDir: cfg.StateDir, Logger: cfg.Logger, NoTerminal: u.noTerminal}
	ok, err := connect.Resolve(&cc, u.url, u.token, nil)
	if err != nil || !ok {
		return err
	}
	c, err := connect.New(cc)
	if err != nil {
		return err
	}
	u.client = c
	cfg.PolicyPath = c.PolicyPath()
	cfg.Audit = c
	cfg.Secrets = c
	fmt.Fprintf(out, "cagent: connected mode: control plane %s; running %s\n", cc.URL, c.PolicyPath())
	return nil
}

// run keeps the control-plane connection until ctx ends.
func (u *upConnected) run(ctx context.Context, d *daemon.Daemon) func() {
	if u.client == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); u.client.Run(ctx, d) }()
	return func() { cancel(); <-done; u.client.Close() }
}
