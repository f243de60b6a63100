package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/cagent-dev/cagent/internal/service"
	"github.com/cagent-dev/cagent/policy"
)

// Defaults of `cagent dns`.
const (
	DefaultListen   = "127.0.0.1:5353"
	DefaultAdmin    = "127.0.0.1:9153"
	DefaultStateDir = "/var/lib/cagent"
)

// RunConfig is what `cagent dns` runs.
type RunConfig struct {
	ConfigPath string   // policy file (required)
	Listen     string   // UDP and TCP address (default 127.0.0.1:5353)
	Upstreams  []string // IP or IP:port; empty: the policy's dns.upstream, else resolv.conf
	Gateway    string   // IPv4 address allowed names resolve to (required in gateway mode)
	Admin      string   // /healthz, /readyz, /metrics (default 127.0.0.1:9153)
	StateDir   string   // default /var/lib/cagent
	AuditLog   string   // default <state-dir>/audit/dns.jsonl; "-" for stdout
	LogFormat  string   // text (default) or json; json also writes audit events to Stdout
	Agent      string   // recorded in audit events
	// MemoryLimit is the Go runtime's soft memory limit while serving
	// (runtime/debug.SetMemoryLimit, restored when Run returns); 0 leaves
	// the runtime's own. GOMEMLIMIT in the environment wins. `cagent dns`
	// passes DefaultMemoryLimit unless told otherwise.
	MemoryLimit int64

	Stdout, Stderr io.Writer // default os.Stdout, os.Stderr
	ResolvConf     string    // default /etc/resolv.conf
	// OnListen, if set, is called with "udp", "tcp" and "admin" and each
	// listener's bound address (tests listen on port 0).
	OnListen func(name string, addr net.Addr)
}

// Validate checks the flags and returns the parsed upstreams and gateway.
func (c *RunConfig) Validate() ([]netip.AddrPort, netip.Addr, error) {
	var gw netip.Addr
	if c.ConfigPath == "" {
		return nil, gw, errors.New("--config is required")
	}
	if c.LogFormat != "" && c.LogFormat != "text" && c.LogFormat != "json" {
		return nil, gw, fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	}
	var ups []netip.AddrPort
	for _, u := range c.Upstreams {
		ap, err := policy.ParseHostPort(u, 53)
		if err != nil {
			return nil, gw, fmt.Errorf("--upstream: %w", err)
		}
		ups = append(ups, ap)
	}
	if c.Gateway != "" {
		a, err := netip.ParseAddr(c.Gateway)
		if err != nil || !a.Unmap().Is4() {
			return nil, gw, fmt.Errorf("--gateway %q: not an IPv4 address", c.Gateway)
		}
		gw = a.Unmap()
	}
	if _, err := netip.ParseAddrPort(c.Listen); err != nil {
		return nil, gw, fmt.Errorf("--listen %q: use IP:port, e.g. %s", c.Listen, DefaultListen)
	}
	if c.Admin != "" && c.Admin == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
		return nil, gw, fmt.Errorf("--admin %s must differ from --listen", c.Admin)
	}
	return ups, gw, nil
}

// Run runs `cagent dns` until ctx ends: the filter on UDP and TCP, the admin
// endpoints, policy reloads on SIGHUP and file change, and the audit log.
func Run(ctx context.Context, rc RunConfig) error {
	if rc.Listen == "" {
		rc.Listen = DefaultListen
	}
	if rc.Admin == "" {
		rc.Admin = DefaultAdmin
	}
	if rc.StateDir == "" {
		rc.StateDir = DefaultStateDir
	}
	if rc.Stdout == nil {
		rc.Stdout = os.Stdout
	}
	if rc.Stderr == nil {
		rc.Stderr = os.Stderr
	}
	ups, gw, err := rc.Validate()
	if err != nil {
		return err
	}
	logger := service.Logger(rc.LogFormat, rc.Stderr)
	// Once before start-up's own work (policy, audit log, listeners, admin)
	// and once after it: the first drops the pages package initialisation
	// of the whole multi-command binary touched, so that they and start-up's
	// do not add up to the process's peak RSS (VmHWM: 20.4 MB before this
	// trim, 16.9 MB after, measured at start-up).
	trimStartup()

	sink, err := openAudit(rc, func(err error) {
		logger.Error("dns: audit log write failed; events are being lost", "err", err)
	})
	if err != nil {
		return err
	}
	defer sink.Close()
	auditPath := sink.Path()

	var flt atomic.Pointer[Filter]
	w, err := service.WatchPolicy(ctx, rc.ConfigPath, logger, func(p *policy.Policy) {
		if f := flt.Load(); f != nil {
			f.SetPolicy(p)
		}
	})
	if err != nil {
		return err
	}
	defer w.Close()

	reg := service.NewRegistry()
	f, err := New(Config{
		Policy:     w.Current(),
		Upstreams:  ups,
		Gateway:    gw,
		Audit:      sink.Queue, // the concrete queue: the fast path emits without allocating
		Logger:     logger,
		Agent:      rc.Agent,
		Metrics:    reg,
		ResolvConf: rc.ResolvConf,
	})
	if err != nil {
		return err
	}
	flt.Store(f)
	f.SetPolicy(w.Current()) // a reload between Watch and Store is not lost

	pc, ln, err := listenBoth(rc.Listen)
	if err != nil {
		f.Close()
		return err
	}
	aln, err := net.Listen("tcp", rc.Admin)
	if err != nil {
		pc.Close()
		ln.Close()
		f.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	if rc.OnListen != nil {
		rc.OnListen("udp", pc.LocalAddr())
		rc.OnListen("tcp", ln.Addr())
		rc.OnListen("admin", aln.Addr())
	}
	ready := service.NewFlag("not serving yet")
	// Still serving with the last good policy after a failed reload: ready, but say so.
	admin := service.NewAdmin(service.AdminConfig{Metrics: reg, Ready: ready.Err, LastReload: w.LastError})

	errc := make(chan error, 3)
	go func() { errc <- f.ServeUDP(pc) }()
	go func() { errc <- f.ServeTCP(ln) }()
	go func() {
		if err := admin.Serve(aln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin: %w", err)
			return
		}
		errc <- nil
	}()
	ready.Set(true)
	// Start-up is over: give back what only it needed (see trimStartup),
	// then limit the runtime's memory against what is left in use.
	advised := trimStartup()
	limit, restoreLimit := applyMemoryLimit(rc.MemoryLimit)
	defer restoreLimit()
	logger.Info("dns filter started", "listen", rc.Listen, "admin", aln.Addr().String(), "upstreams", f.state.Load().upstreams,
		"answer", w.Current().DNS.Answer, "audit_log", auditPath, "memory_limit", limitString(limit))
	logger.Debug("released start-up memory", "mapped_bytes_advised", advised, "runtime_in_use", runtimeInUse())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	ready.Set(false)
	admin.Close()
	if err := f.Close(); err != nil && runErr == nil {
		runErr = err
	}
	// Collect the remaining serve loops (one was already received on error).
	n := 3
	if runErr != nil {
		n = 2
	}
	for range n {
		if err := <-errc; err != nil && runErr == nil {
			runErr = err
		}
	}
	logger.Info("dns filter stopped")
	return runErr
}

// listenBoth binds UDP and TCP on addr; with port 0 both get the same
// random port (retrying when TCP finds it taken).
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("udp listener: %w", err)
		}
		ap := netip.MustParseAddrPort(pc.LocalAddr().String())
		ln, err := net.Listen("tcp", net.JoinHostPort(ap.Addr().String(), strconv.Itoa(int(ap.Port()))))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if _, p, _ := net.SplitHostPort(addr); p != "0" || i == 10 {
			return nil, nil, fmt.Errorf("tcp listener: %w", err)
		}
	}
}

// openAudit opens the audit sink: a hash-chained file, or stdout for "-";
// with --log-format json, events also go to stdout. Events are written in
// batches by one goroutine (audit.Queue).
func openAudit(rc RunConfig, onErr func(error)) (*service.Audit, error) {
	path := rc.AuditLog
	if path == "" {
		path = filepath.Join(rc.StateDir, "audit", "dns.jsonl")
	}
	if path != "-" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("audit dir: %w", err)
		}
	}
	return service.OpenAudit(service.AuditConfig{File: path, DashIsStdout: true, JSON: rc.LogFormat == "json", Stdout: rc.Stdout, OnError: onErr})
}
