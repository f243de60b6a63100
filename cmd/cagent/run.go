package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/cagent-dev/cagent/sandbox/oneshot"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newRunCmd) }

// gcStartPercent is the GOGC of a run's first second (see runSandbox).
const gcStartPercent = 400

type runFlags struct {
	config, runtime, workspace, stateDir, auditLog, agent string
	upstreamDNS                                           []string
	verbose                                               bool
}

func newRunCmd() *cobra.Command {
	var fl runFlags
	cmd := &cobra.Command{
		Use:   "run --config FILE [--runtime runc|gvisor] [--workspace DIR] [--state-dir DIR] -- CMD ARGS...",
		Short: "Run one command in a fresh sandbox",
		Long: `Run one command in a fresh sandbox: its own network namespace whose only
way out is this process's egress proxy (explicit on port 3128, transparent on
80 and 443) and DNS filter (53), enforcing the policy; an OCI bundle run by
runc or gVisor (runsc) with a seccomp allowlist, no capabilities, a read-only
root, tmpfs /tmp, the workspace at /workspace and cgroup limits.

Stdio is passed through (a TTY when stdin is a terminal) and cagent exits with
the command's status. Needs root. Everything is removed on exit; after a crash,
'cagent gc' removes what was left.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := runSandbox(cmd, fl, args)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.config, "config", "", "policy file (cagent.yaml)")
	f.StringVar(&fl.runtime, "runtime", "", "runc or gvisor (default: the policy's sandbox.runtime, else gvisor when runsc is installed)")
	f.StringVar(&fl.workspace, "workspace", "", "directory mounted read-write at /workspace (default: the policy's sandbox.workspace)")
	f.StringVar(&fl.stateDir, "state-dir", "/var/lib/cagent", "directory for the CA, leases, bundles and audit logs")
	f.StringArrayVar(&fl.upstreamDNS, "upstream-dns", nil, "upstream resolver for the DNS filter and the proxy, IP or IP:port (repeatable; default: the policy's dns.upstream, else /etc/resolv.conf)")
	f.StringVar(&fl.auditLog, "audit-log", "", "audit log file (default <state-dir>/audit/run-<agent>.jsonl, or run-<time>-<pid>-<random>.jsonl without --agent)")
	f.StringVar(&fl.agent, "agent", "", "agent name: in audit events, and the key of the proxy's persistent CA and byte budgets (<state-dir>/agents/NAME); default: a one-off name per run")
	f.BoolVarP(&fl.verbose, "verbose", "v", false, "log sandbox setup and teardown (with timings) to stderr")
	cmd.MarkFlagRequired("config")
	return cmd
}

func runSandbox(cmd *cobra.Command, fl runFlags, args []string) (int, error) {
	// Setting up a sandbox allocates ~3 MB (the audit queue's buffer, JSON
	// and netlink messages), which crosses the Go runtime's initial 4 MB
	// heap goal while the container runtime starts: the collection would
	// compete with it for the CPU (and fault in its own memory). Collect
	// less often for the first second, then go back to the default, so
	// that a long session's heap stays as small as usual.
	if old := debug.SetGCPercent(gcStartPercent); old < 0 || old > gcStartPercent {
		debug.SetGCPercent(old) // GOGC=off or higher: leave it
	} else {
		t := time.AfterFunc(time.Second, func() { debug.SetGCPercent(old) })
		defer t.Stop()
	}
	level := slog.LevelWarn
	if fl.verbose {
		level = slog.LevelDebug
	}
	return oneshot.Run(cmd.Context(), oneshot.Config{
		PolicyFile: fl.config, Args: args, Runtime: fl.runtime, Workspace: fl.workspace,
		StateDir: fl.stateDir, AuditLog: fl.auditLog, Agent: fl.agent, UpstreamDNS: fl.upstreamDNS,
		Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})),
		Stdin:  os.Stdin, Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(),
	})
}
