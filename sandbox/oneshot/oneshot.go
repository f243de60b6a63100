// Package oneshot runs one command in a fresh sandbox with its own egress
// proxy and DNS filter: the orchestration behind `cagent run`. It lives
// outside package sandbox so that sandbox does not depend on proxy and
// dnsfilter (it only knows their interfaces).
package oneshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
	"golang.org/x/sys/unix"
)

// Config is one run. Only PolicyFile, Args and StateDir are required.
type Config struct {
	PolicyFile  string   // cagent.yaml
	Args        []string // the command
	Runtime     string   // runc or gvisor; see sandbox.Config.Runtime
	Workspace   string
	StateDir    string
	AuditLog    string   // default <state-dir>/audit/run-<agent>.jsonl, or a one-off name without Agent
	Agent       string   // default: a one-off agent per run
	UpstreamDNS []string // IP or IP:port; default the policy's dns.upstream

	Logger *slog.Logger // default: discard
	// Stdin is passed to the command; when it is a terminal the command
	// gets a TTY of its size.
	Stdin          *os.File
	Stdout, Stderr io.Writer
	// Signals are forwarded to the command. Nil means SIGHUP, SIGQUIT,
	// SIGUSR1 and SIGUSR2 sent to this process.
	Signals <-chan os.Signal
}

// Run runs cfg.Args in a sandbox and returns its exit status. Invalid
// policy errors are printed to Stderr, one per line, before the error.
func Run(ctx context.Context, cfg Config) (int, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stderr := cfg.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	pol, err := policy.ParseFile(cfg.PolicyFile)
	if err != nil {
		var perrs policy.Errors
		if errors.As(err, &perrs) {
			for _, e := range perrs {
				fmt.Fprintln(stderr, e.Error())
			}
			return 0, fmt.Errorf("invalid policy %s: fix the errors above (cagent policy check %s)", cfg.PolicyFile, cfg.PolicyFile)
		}
		return 0, err
	}
	upstreams, err := parseUpstreams(cfg.UpstreamDNS)
	if err != nil {
		return 0, err
	}
	scfg := sandbox.Config{
		Policy: pol, Args: cfg.Args, Runtime: cfg.Runtime, Workspace: cfg.Workspace,
		StateDir: cfg.StateDir, Agent: cfg.Agent, Logger: log,
		Stdout: cfg.Stdout, Stderr: cfg.Stderr,
	}
	if cfg.Stdin != nil {
		scfg.Stdin = cfg.Stdin
	}
	// Report a missing runtime, workspace or root before touching any file.
	if err := scfg.Validate(); err != nil {
		return 0, err
	}
	auditPath := cfg.AuditLog
	if auditPath == "" {
		auditPath = AuditPath(cfg.StateDir, cfg.Agent, time.Now(), os.Getpid())
	}
	if err := os.MkdirAll(filepath.Dir(auditPath), 0o700); err != nil {
		return 0, err
	}
	unlock, err := lockAudit(auditPath)
	if err != nil {
		return 0, err
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

	scfg.Audit = q
	// The proxy keeps its CA and byte budgets per agent, under
	// <state-dir>/agents/NAME; a proxy locks its budget file, so two runs
	// of one agent cannot overlap. A run without an agent is its own
	// agent (named after its sandbox) and its directory goes with it.
	var ephemeral string
	var unlockEphemeral func()
	scfg.NewServices = func(g sandbox.Gateway) (*sandbox.Services, error) {
		if cfg.Agent != "" {
			return newGatewayServices(pol, filepath.Join(cfg.StateDir, "agents", cfg.Agent), upstreams, g, q, log)
		}
		// Locked while the run may use it, so that `cagent gc` removes it
		// only once the run is gone (even after a SIGKILL).
		dir, release, err := sandbox.OneOffDir("", cfg.StateDir, g.ID)
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
	if cfg.Stdin != nil && isTerminal(cfg.Stdin) {
		scfg.Terminal = true
		if rows, cols, err := pty.Getsize(cfg.Stdin); err == nil {
			scfg.Rows, scfg.Cols = uint(rows), uint(cols)
		}
	}
	scfg.Signals = cfg.Signals
	if scfg.Signals == nil {
		// Forward these to the sandboxed command. SIGINT and SIGTERM are
		// the caller's: they cancel ctx, which tears the sandbox down
		// after a grace.
		sigs := make(chan os.Signal, 8)
		signal.Notify(sigs, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sigs)
		scfg.Signals = sigs
	}
	return sandbox.Run(ctx, scfg)
}

func parseUpstreams(ss []string) ([]netip.AddrPort, error) {
	var upstreams []netip.AddrPort
	for _, u := range ss {
		ap, err := policy.ParseHostPort(u, 53)
		if err != nil {
			return nil, fmt.Errorf("--upstream-dns %q: %w", u, err)
		}
		upstreams = append(upstreams, ap)
	}
	return upstreams, nil
}

// AuditPath is the default audit log of a run. A hash-chained file has one
// writer: each run writes its own file (run-<agent>.jsonl, or
// run-<time>-<pid>-<random>.jsonl if unnamed), and a lock (see Run) makes
// two runs on one file fail instead of breaking the chain.
func AuditPath(stateDir, agent string, now time.Time, pid int) string {
	name := agent
	if name == "" {
		var rnd [4]byte
		_, _ = rand.Read(rnd[:])
		name = now.UTC().Format("20060102T150405Z") + "-" + strconv.Itoa(pid) + "-" + hex.EncodeToString(rnd[:])
	}
	return filepath.Join(stateDir, "audit", "run-"+name+".jsonl")
}

// lockAudit locks auditPath for one run, through a lock file beside it.
func lockAudit(auditPath string) (func(), error) {
	unlock, err := lockFile(auditPath + ".lock")
	if err != nil {
		return nil, fmt.Errorf("audit log %s is in use by another run (give each concurrent run its own --agent or --audit-log): %w", auditPath, err)
	}
	return unlock, nil
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

func isTerminal(f *os.File) bool {
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
