package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/dnsfilter"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/proxy"
	"github.com/cagent-dev/cagent/sandbox"
	"github.com/creack/pty"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func init() { commands = append(commands, newRunCmd) }

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
	level := slog.LevelWarn
	if fl.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
	pol, err := policy.ParseFile(fl.config)
	if err != nil {
		var perrs policy.Errors
		if errors.As(err, &perrs) {
			for _, e := range perrs {
				fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
			}
			return 0, fmt.Errorf("invalid policy %s: fix the errors above (cagent policy check %s)", fl.config, fl.config)
		}
		return 0, err
	}
	var upstreams []netip.AddrPort
	for _, u := range fl.upstreamDNS {
		ap, err := policy.ParseHostPort(u, 53)
		if err != nil {
			return 0, fmt.Errorf("--upstream-dns %q: %w", u, err)
		}
		upstreams = append(upstreams, ap)
	}
	cfg := sandbox.Config{
		Policy: pol, Args: args, Runtime: fl.runtime, Workspace: fl.workspace,
		StateDir: fl.stateDir, Agent: fl.agent, Logger: log,
		Stdin: os.Stdin, Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(),
	}
	// Report a missing runtime, workspace or root before touching any file.
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	// A hash-chained file has one writer: each run writes its own file
	// (run-<agent>.jsonl, or run-<time>-<pid>-<random>.jsonl if unnamed), and
	// a lock makes two runs on one file fail instead of breaking the chain.
	auditPath := fl.auditLog
	if auditPath == "" {
		name := fl.agent
		if name == "" {
			var rnd [4]byte
			_, _ = rand.Read(rnd[:])
			name = time.Now().UTC().Format("20060102T150405Z") + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(rnd[:])
		}
		auditPath = filepath.Join(fl.stateDir, "audit", "run-"+name+".jsonl")
	}
	if err := os.MkdirAll(filepath.Dir(auditPath), 0o700); err != nil {
		return 0, err
	}
	unlock, err := lockFile(auditPath + ".lock")
	if err != nil {
		return 0, fmt.Errorf("audit log %s is in use by another run (give each concurrent run its own --agent or --audit-log): %w", auditPath, err)
	}
	defer unlock()
	sink, err := audit.OpenFile(auditPath)
	if err != nil {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	defer sink.Close()
	// One queue for the sandbox's, proxy's and DNS filter's events: they
	// are encoded and written off the request path, in emit order, and
	// drained (deferred after sink.Close, so first) when the run ends.
	q := audit.NewQueue(sink, func(err error) { log.Error("audit log write failed", "err", err) })
	defer q.Close()

	cfg.Audit = q
	// The proxy keeps its CA and byte budgets per agent, under
	// <state-dir>/agents/NAME; a proxy locks its budget file, so two runs
	// of one --agent cannot overlap. A run without --agent is its own
	// agent (named after its sandbox) and its directory goes with it.
	var ephemeral string
	var unlockEphemeral func()
	cfg.NewServices = func(g sandbox.Gateway) (*sandbox.Services, error) {
		if fl.agent != "" {
			return newGatewayServices(pol, filepath.Join(fl.stateDir, "agents", fl.agent), upstreams, g, q, log)
		}
		// Locked while the run may use it, so that `cagent gc` removes it
		// only once the run is gone (even after a SIGKILL).
		dir, release, err := sandbox.OneOffDir("", fl.stateDir, g.ID)
		if err != nil {
			return nil, err
		}
		ephemeral, unlockEphemeral = dir, release
		return newGatewayServices(pol, dir, upstreams, g, q, log)
	}
	defer func() {
		if ephemeral != "" {
			os.RemoveAll(ephemeral)
			unlockEphemeral()
		}
	}()
	if stdinIsTTY(os.Stdin) {
		cfg.Terminal = true
		if rows, cols, err := pty.Getsize(os.Stdin); err == nil {
			cfg.Rows, cfg.Cols = uint(rows), uint(cols)
		}
	}
	// Forward these to the sandboxed command. SIGINT and SIGTERM also
	// cancel the context (main), which tears the sandbox down after a grace.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	cfg.Signals = sigs
	return sandbox.Run(cmd.Context(), cfg)
}

// newGatewayServices builds the proxy and DNS filter of one sandbox; they
// listen only on its gateway address (sandbox.Run opens the listeners).
func newGatewayServices(pol *policy.Policy, proxyDir string, upstreams []netip.AddrPort, g sandbox.Gateway, sink audit.Sink, log *slog.Logger) (*sandbox.Services, error) {
	p, err := proxy.New(proxy.Config{Policy: pol, StateDir: proxyDir, Audit: sink, Logger: log.With("component", "proxy"),
		Agent: g.Agent, Upstreams: upstreams})
	if err != nil {
		return nil, err
	}
	d, err := dnsfilter.New(dnsfilter.Config{Policy: pol, Upstreams: upstreams, Gateway: g.Gateway, Audit: sink,
		Logger: log.With("component", "dns"), Agent: g.Agent})
	if err != nil {
		p.Close()
		return nil, err
	}
	return &sandbox.Services{Proxy: p, DNS: d}, nil
}

func stdinIsTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// lockFile takes an exclusive, non-blocking lock on path (created if needed).
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
