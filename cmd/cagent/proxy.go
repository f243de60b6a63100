package main

import (
	"github.com/cagent-dev/cagent/proxy"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newProxyCmd) }

func newProxyCmd() *cobra.Command {
	var rc proxy.RunConfig
	cmd := &cobra.Command{
		Use:   "proxy --config FILE [--listen ADDR] [--admin ADDR]",
		Short: "Run the egress proxy alone (explicit HTTP proxy and CONNECT)",
		Long: `Run the policy-enforcing egress proxy alone, for users who bring their own
isolation (a container, a VM). Point HTTP_PROXY and HTTPS_PROXY at --listen.

The policy file is reloaded on SIGHUP and whenever it changes; an invalid
file is rejected with its errors logged and the running policy stays.
/healthz, /readyz and /metrics are served on --admin only, never on the
sandbox-facing listeners. Audit events are appended, hash-chained, to
--audit-log, or else to rotating files under <state-dir>/audit/ (sized and
kept as the policy's audit: section says); with --log-format json
they are also written to stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rc.Stdout, rc.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return proxy.Run(cmd.Context(), rc)
		},
	}
	f := cmd.Flags()
	f.StringVar(&rc.ConfigPath, "config", "", "policy file (cagent.yaml)")
	f.StringVar(&rc.Listen, "listen", "127.0.0.1:3128", "explicit proxy address")
	f.StringVar(&rc.Admin, "admin", "127.0.0.1:9129", "admin address for /healthz, /readyz, /metrics")
	f.StringVar(&rc.StateDir, "state-dir", "/var/lib/cagent", "directory for the CA, byte budgets and audit logs")
	f.StringVar(&rc.TransparentHTTP, "transparent-http", "", "transparent HTTP listener (traffic redirected from port 80, routed by Host)")
	f.StringVar(&rc.TransparentTLS, "transparent-tls", "", "transparent TLS listener (traffic redirected from port 443, routed by SNI)")
	f.StringVar(&rc.AuditLog, "audit-log", "", "audit log file (default: rotating files under <state-dir>/audit/)")
	f.StringVar(&rc.LogFormat, "log-format", "text", "text or json (json also writes audit events to stdout)")
	f.StringVar(&rc.Agent, "agent", "", "agent name recorded in audit events")
	cmd.MarkFlagRequired("config")
	return cmd
}
