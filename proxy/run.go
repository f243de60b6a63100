package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"

	"github.com/cagent-dev/cagent/credential"
	"github.com/cagent-dev/cagent/internal/service"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/secretstore"
)

// RunConfig is what `cagent proxy` runs.
type RunConfig struct {
	ConfigPath      string // policy file (required)
	Listen          string // explicit proxy address (default 127.0.0.1:3128)
	Admin           string // /healthz, /readyz, /metrics (default 127.0.0.1:9129)
	StateDir        string // default /var/lib/cagent
	TransparentHTTP string // optional port-80 listener
	TransparentTLS  string // optional port-443 listener
	AuditLog        string // one file; default: rotating <state-dir>/audit/audit-<time>.jsonl
	LogFormat       string // text (default) or json; json also writes audit events to Stdout
	Agent           string

	Stdout, Stderr io.Writer        // default os.Stdout, os.Stderr
	Upstreams      []netip.AddrPort // DNS servers; nil: the policy's, else resolv.conf
	Secrets        credential.SecretSource
	LookupEnv      func(string) (string, bool)
	// OnListen, if set, is called with each listener's name ("explicit",
	// "admin", "transparent-http", "transparent-tls") and bound address.
	OnListen func(name string, addr net.Addr)
}

// Validate checks the flags.
func (c *RunConfig) Validate() error {
	if c.ConfigPath == "" {
		return errors.New("--config is required")
	}
	if c.LogFormat != "" && c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	}
	// The admin endpoints must never be reachable on a sandbox-facing address.
	for _, a := range []string{c.Listen, c.TransparentHTTP, c.TransparentTLS} {
		if a != "" && sameAddr(a, c.Admin) {
			return fmt.Errorf("--admin %s must differ from the sandbox-facing listeners", c.Admin)
		}
	}
	return nil
}

func sameAddr(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	if ap != bp || ap == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ah == bh || wild(ah) || wild(bh)
}

// Run runs the standalone proxy until ctx ends.
func Run(ctx context.Context, rc RunConfig) error {
	if rc.Listen == "" {
		rc.Listen = "127.0.0.1:3128"
	}
	if rc.Admin == "" {
		rc.Admin = "127.0.0.1:9129"
	}
	if rc.StateDir == "" {
		rc.StateDir = "/var/lib/cagent"
	}
	if rc.Stdout == nil {
		rc.Stdout = os.Stdout
	}
	if rc.Stderr == nil {
		rc.Stderr = os.Stderr
	}
	if err := rc.Validate(); err != nil {
		return err
	}
	defer tuneGC()()
	// One line per request: written by one goroutine, many lines per write.
	logOut := newAsyncWriter(rc.Stderr)
	defer logOut.Close()
	logger := service.Logger(rc.LogFormat, logOut)
	if rc.LogFormat != "json" {
		// The same text handler, with a fast path for the egress line.
		logger = slog.New(newLineHandler(logOut))
	}
	if err := os.MkdirAll(rc.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}

	secrets := rc.Secrets
	if secrets == nil {
		if st, err := secretstore.Open(rc.StateDir); err != nil {
			logger.Warn("secret store unavailable; secret: credentials will fail", "err", err)
		} else {
			secrets = st
		}
	}

	var px atomic.Pointer[Proxy]
	var aud atomic.Pointer[service.Audit]
	w, err := service.WatchPolicy(ctx, rc.ConfigPath, logger, func(pol *policy.Policy) {
		if a := aud.Load(); a != nil {
			a.SetLimits(pol)
		}
		if p := px.Load(); p != nil {
			p.SetPolicy(pol)
		}
	})
	if err != nil {
		return err
	}
	defer w.Close()

	// Audit: one file with --audit-log, else rotating files under
	// <state-dir>/audit sized and kept as the policy's audit section says.
	// Events are encoded and written off the request path, in batches.
	pol := w.Current()
	sink, err := service.OpenAudit(service.AuditConfig{
		File: rc.AuditLog, Dir: filepath.Join(rc.StateDir, "audit"),
		MaxSize: int64(pol.Audit.MaxSize), Retention: pol.Audit.Retention.D(),
		JSON: rc.LogFormat == "json", Stdout: rc.Stdout,
		OnError: func(err error) { logger.Error("audit log write failed", "err", err) },
	})
	if err != nil {
		return err
	}
	defer sink.Close()
	aud.Store(sink)
	sink.SetLimits(w.Current()) // a reload between Current and Store is not lost
	auditPath := sink.Path()

	reg := service.NewRegistry()
	p, err := New(Config{
		Policy:    w.Current(),
		StateDir:  rc.StateDir,
		Audit:     sink.Queue,
		Logger:    logger,
		Agent:     rc.Agent,
		Upstreams: rc.Upstreams,
		Secrets:   secrets,
		Metrics:   reg,
		LookupEnv: rc.LookupEnv,
	})
	if err != nil {
		return err
	}
	px.Store(p)
	p.SetPolicy(w.Current()) // a reload between Watch and Store is not lost

	type listener struct {
		name, addr string
		serve      func(net.Listener) error
	}
	ls := []listener{{"explicit", rc.Listen, p.ServeExplicit}}
	if rc.TransparentHTTP != "" {
		ls = append(ls, listener{"transparent-http", rc.TransparentHTTP, p.ServeTransparentHTTP})
	}
	if rc.TransparentTLS != "" {
		ls = append(ls, listener{"transparent-tls", rc.TransparentTLS, p.ServeTransparentTLS})
	}
	// /readyz stays ready after a failed reload (the last good policy is
	// enforced) but says so, as the DNS filter's does.
	admin := service.NewAdmin(service.AdminConfig{Metrics: reg, Ready: p.Ready, LastReload: w.LastError})

	errc := make(chan error, len(ls)+1)
	var opened []net.Listener
	closeAll := func() {
		for _, l := range opened {
			l.Close()
		}
	}
	for _, l := range ls {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeAll()
			p.Close()
			return fmt.Errorf("%s listener: %w", l.name, err)
		}
		opened = append(opened, ln)
		if rc.OnListen != nil {
			rc.OnListen(l.name, ln.Addr())
		}
		go func(serve func(net.Listener) error, ln net.Listener) { errc <- serve(ln) }(l.serve, ln)
	}
	aln, err := net.Listen("tcp", rc.Admin)
	if err != nil {
		closeAll()
		p.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	if rc.OnListen != nil {
		rc.OnListen("admin", aln.Addr())
	}
	go func() {
		if err := admin.Serve(aln); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	logger.Info("proxy started", "listen", rc.Listen, "admin", rc.Admin, "state_dir", rc.StateDir, "audit_log", auditPath)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	admin.Close()
	if err := p.Close(); err != nil && runErr == nil {
		runErr = err
	}
	for range ls {
		if err := <-errc; err != nil && runErr == nil {
			runErr = err
		}
	}
	logger.Info("proxy stopped")
	return runErr
}

// tuneGC trades heap for CPU: net/http allocates ~19 KB per proxied request
// but the proxy keeps little alive, so with the default GOGC=100 the
// collector runs constantly under load. GOGC=400 cut CPU per keep-alive
// request by ~10% (76.5 -> 68.4 us, bench/proxy) for ~30 MB more RSS under
// load; a soft limit of 256 MiB makes the collector work harder before the
// heap grows past that. GOGC and GOMEMLIMIT in the environment win. The
// returned func restores the previous settings (Run may run in a test).
func tuneGC() (restore func()) {
	gc, limit := -2, int64(-1)
	if os.Getenv("GOGC") == "" {
		gc = debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		limit = debug.SetMemoryLimit(256 << 20)
	}
	return func() {
		if gc != -2 {
			debug.SetGCPercent(gc)
		}
		if limit >= 0 {
			debug.SetMemoryLimit(limit)
		}
	}
}
