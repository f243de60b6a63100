package main

import (
	"fmt"
	"strconv"

	"github.com/cagent-dev/cagent/dnsfilter"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newDNSCmd) }

func newDNSCmd() *cobra.Command {
	var rc dnsfilter.RunConfig
	var memLimit string
	cmd := &cobra.Command{
		Use:   "dns --config FILE --listen ADDR [--upstream ADDR]... [--gateway IP]",
		Short: "Run the DNS filter alone",
		Long: `Run the policy-enforcing DNS filter alone, over UDP and TCP on --listen.

Names allowed by the policy are resolved through the upstreams (--upstream,
else the policy's dns.upstream, else the host's resolv.conf) and answered with
the gateway address (dns.answer: gateway, needs --gateway) or with the real,
filtered addresses (dns.answer: upstream). Everything else is NXDOMAIN or
REFUSED with an Extended DNS Error saying why. See docs/dns.md.

The policy file is reloaded on SIGHUP and whenever it changes; an invalid
file is rejected with its errors logged and the running policy stays.
/healthz, /readyz and /metrics are served on --admin only. Audit events are
appended, hash-chained, to --audit-log (default <state-dir>/audit/dns.jsonl;
"-" for stdout); with --log-format json they are also written to stdout.
The Go runtime gets a soft memory limit (--memory-limit, default 12MiB; an
explicit GOMEMLIMIT wins) so that RSS stays small under floods of names.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, err := dnsfilter.ParseMemoryLimit(memLimit)
			if err != nil {
				return fmt.Errorf("--memory-limit: %w", err)
			}
			rc.MemoryLimit = limit
			rc.Stdout, rc.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return dnsfilter.Run(cmd.Context(), rc)
		},
	}
	f := cmd.Flags()
	f.StringVar(&rc.ConfigPath, "config", "", "policy file (cagent.yaml)")
	f.StringVar(&rc.Listen, "listen", dnsfilter.DefaultListen, "UDP and TCP address to answer on")
	f.StringArrayVar(&rc.Upstreams, "upstream", nil, "upstream resolver, IP or IP:port (repeat for failover; default: the policy's dns.upstream, else /etc/resolv.conf)")
	f.StringVar(&rc.Gateway, "gateway", "", "IPv4 address allowed names and aliases resolve to (required when dns.answer is gateway)")
	f.StringVar(&rc.Admin, "admin", dnsfilter.DefaultAdmin, "admin address for /healthz, /readyz, /metrics")
	f.StringVar(&rc.StateDir, "state-dir", dnsfilter.DefaultStateDir, "directory for audit logs")
	f.StringVar(&rc.AuditLog, "audit-log", "", `audit log file (default <state-dir>/audit/dns.jsonl; "-" for stdout)`)
	f.StringVar(&rc.LogFormat, "log-format", "text", "text or json (json also writes audit events to stdout)")
	f.StringVar(&rc.Agent, "agent", "", "agent name recorded in audit events")
	f.StringVar(&memLimit, "memory-limit", strconv.Itoa(dnsfilter.DefaultMemoryLimit>>20)+"MiB",
		"soft memory limit of the Go runtime (KiB, MiB, GiB; off for none); GOMEMLIMIT in the environment wins")
	cmd.MarkFlagRequired("config")
	return cmd
}
