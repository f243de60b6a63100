package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/daemon"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newUpCmd) }

func newUpCmd() *cobra.Command {
	var cfg daemon.Config
	var logLevel string
	var conn upConnected
	cmd := &cobra.Command{
		Use:   "up --config FILE",
		Short: "Run the standalone data plane: the agent's sandbox, proxy, DNS filter and admin UI",
		Long: `Run the standalone data plane until interrupted: the agent's long-lived
sandbox, the egress proxy and DNS filter on its gateway, and the local admin
UI and API (policy admin.listen, default http://127.0.0.1:8081).

The first start prints an admin token once; log in to the UI with it. Make a
new one with "cagent admin token --rotate". cagent.yaml is watched: a valid
change applies within a second, an invalid one is rejected (the running
policy stays) and its errors are shown in the UI. Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			return runUp(cmd.Context(), cmd, cfg, &conn)
		},
	}
	cmd.Flags().StringVar(&cfg.PolicyPath, "config", "", "policy file (cagent.yaml)")
	cmd.Flags().StringVar(&cfg.StateDir, "state-dir", "/var/lib/cagent", "directory for the CA, secrets, audit logs and sandbox state")
	cmd.Flags().StringVar(&cfg.Runtime, "runtime", "", "runc or gvisor (default: policy sandbox.runtime)")
	cmd.Flags().StringVar(&cfg.Agent, "agent", "agent", "agent name in audit events")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&conn.url, "control-plane", "", "connected mode: control plane URL (or mode: connected in the policy)")
	cmd.Flags().StringVar(&conn.token, "token", "", "connected mode: agent token (prefer CAGENT_TOKEN or control_plane.token_file: argv is visible to other users)")
	cmd.Flags().BoolVar(&conn.noTerminal, "no-remote-terminal", false, "connected mode: refuse the control plane's web terminal (no shell in the sandbox through the control plane)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func runUp(ctx context.Context, cmd *cobra.Command, cfg daemon.Config, conn *upConnected) error {
	if os.Geteuid() != 0 {
		return errors.New("cagent up needs root (it creates network namespaces and nftables rules): run it with sudo")
	}
	if err := conn.prepare(&cfg, cmd.ErrOrStderr()); err != nil {
		return err
	}
	d, err := daemon.New(cfg)
	if err != nil {
		return err
	}
	tok, created, err := adminui.EnsureToken(cfg.StateDir)
	if err != nil {
		d.Close()
		return err
	}
	if err := d.Boot(ctx); err != nil {
		d.Close()
		return err
	}
	defer d.Close()
	stopConn := conn.run(ctx, d)
	defer stopConn()
	a := d.Policy().Admin
	ln, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return fmt.Errorf("admin UI: %w", err)
	}
	scheme := "http"
	if a.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(a.TLSCert, a.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("admin TLS: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	out := cmd.ErrOrStderr()
	fmt.Fprintf(out, "cagent: admin UI on %s://%s\n", scheme, ln.Addr())
	if created {
		fmt.Fprintf(out, "cagent: admin token (shown once; `cagent admin token --rotate` makes a new one):\n\n    %s\n\n", tok)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("admin UI: %w", err)
	}
	fmt.Fprintln(out, "cagent: shutting down")
	// The daemon first: that ends terminal sessions and live tails, which
	// would otherwise hold the HTTP server's shutdown open.
	derr := d.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		_ = srv.Close()
	}
	return derr
}
