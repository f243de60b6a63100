// Package daemon is `cagent up`: the standalone data plane. It keeps the
// agent's long-lived sandbox running with its proxy and DNS filter on the
// sandbox gateway, supervises them (health checks; a crashed component is
// restarted, a stopped one stays stopped), watches cagent.yaml and applies
// valid changes live, writes the audit log and serves the local admin UI.
package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/credential"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/policywatch"
	"github.com/cagent-dev/cagent/sandbox"
	"github.com/cagent-dev/cagent/secretstore"
)

// Config configures a Daemon.
type Config struct {
	PolicyPath string // cagent.yaml (required)
	StateDir   string // default /var/lib/cagent
	Agent      string // name in audit events (default "agent")
	Runtime    string // overrides policy sandbox.runtime
	Logger     *slog.Logger
	Now        func() time.Time

	// Upstreams are the DNS servers used by the proxy and the DNS filter;
	// nil: the policy's dns.upstream, else the host's resolv.conf.
	Upstreams []netip.AddrPort
	// RootCAs verifies upstream TLS; nil: policy proxy.ca_bundle, else system roots.
	RootCAs *x509.CertPool
	// LookupEnv reads env: credentials (tests); nil: os.LookupEnv.
	LookupEnv func(string) (string, bool)

	// HealthInterval is how often components are checked (default 1s).
	HealthInterval time.Duration
	// Audit, if set, receives every event besides the daemon's own files.
	Audit audit.Sink
	// Secrets, if set, replaces the local secret store for secret:
	// credentials (connected mode: the control plane's values).
	Secrets credential.SecretSource
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.PolicyPath == "" {
		return errors.New("daemon: --config is required")
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/cagent"
	}
	if c.Agent == "" {
		c.Agent = "agent"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = time.Second
	}
	return nil
}

// Daemon is a running standalone data plane.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	watcher *policywatch.Watcher
	events  *adminui.EventStore
	files   *auditFiles
	sink    audit.Sink
	// traffic queues the proxy's and DNS filter's events so that encoding
	// and writing them happens off the request path; closed after both stop.
	traffic *audit.Queue
	secrets *secretstore.Store
	admin   *adminui.Server
	started time.Time

	mu      sync.Mutex
	want    bool // the sandbox should run (false after Stop)
	stack   *stack
	comp    map[string]*component
	backoff time.Duration
	nextTry time.Time
	kick    chan struct{}

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// component is the supervisor's record of one part.
type component struct {
	adminui.ComponentStatus
}

// New loads the policy (which must be valid), opens the audit log and the
// secret store, and the event store. Boot runs it.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, started: cfg.Now(), want: true,
		comp: map[string]*component{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	for _, n := range []string{"sandbox", "proxy", "dns"} {
		d.comp[n] = &component{adminui.ComponentStatus{Name: n, State: adminui.StateStarting, Since: cfg.Now()}}
	}
	p, err := policy.ParseFile(cfg.PolicyPath)
	if err != nil {
		return nil, err
	}
	d.events = adminui.NewEventStore(0, cfg.Now)
	auditDir := filepath.Join(cfg.StateDir, "audit")
	if err := d.events.LoadDir(auditDir); err != nil {
		d.log.Warn("reading old audit events", "err", err)
	}
	d.files, err = openAuditFiles(auditDir, p, cfg.Now)
	if err != nil {
		return nil, err
	}
	sinks := []audit.Sink{d.files, d.events}
	if cfg.Audit != nil {
		sinks = append(sinks, cfg.Audit)
	}
	d.sink = audit.Multi(sinks...)
	d.secrets, err = secretstore.Open(cfg.StateDir)
	if err != nil {
		d.files.Close()
		return nil, err
	}
	d.traffic = audit.NewQueue(d.sink, func(err error) { d.log.Error("audit log write failed; events are being lost", "err", err) })
	return d, nil
}

// Boot watches the policy, starts the supervisor (which brings up the
// sandbox, proxy and DNS filter in the background) and returns.
func (d *Daemon) Boot(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	w, err := policywatch.Watch(ctx, d.cfg.PolicyPath, d.log, d.applyPolicy)
	if err != nil {
		cancel()
		return err
	}
	d.watcher = w
	d.admin, err = adminui.New(adminui.Config{
		StateDir: d.cfg.StateDir, PolicyPath: d.cfg.PolicyPath, Policy: w, Controller: d,
		Events: d.events, Audit: d.sink, Logger: d.log, Now: d.cfg.Now,
		LoopbackOnly: d.adminLoopback(), TLS: w.Current().Admin.TLSCert != "",
	})
	if err != nil {
		w.Close()
		cancel()
		return err
	}
	d.emit("daemon_start", nil)
	go d.supervise(ctx)
	return nil
}

func (d *Daemon) adminLoopback() bool {
	ap, err := policy.ParseHostPort(d.watcher.Current().Admin.Listen, 0)
	return err == nil && ap.Addr().IsLoopback()
}

// Handler is the admin UI and API.
func (d *Daemon) Handler() http.Handler { return d.admin }

// Policy is the running policy.
func (d *Daemon) Policy() *policy.Policy { return d.watcher.Current() }

// Events is the in-memory event store behind the logs page.
func (d *Daemon) Events() *adminui.EventStore { return d.events }

// Close stops everything and removes the sandbox. It may be called again.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.close() })
	return d.closeErr
}

func (d *Daemon) close() error {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	if d.admin != nil {
		d.admin.Close()
	}
	if d.watcher != nil {
		d.watcher.Close()
	}
	d.traffic.Close() // the proxy and DNS filter have stopped: write what they queued
	d.emit("daemon_stop", nil)
	return d.files.Close()
}

func (d *Daemon) emit(action string, detail map[string]string) {
	d.sink.Emit(&audit.Event{TS: d.cfg.Now(), Type: audit.TypeSandbox, Agent: d.cfg.Agent, Action: action, Detail: detail})
}

// applyPolicy is called by the watcher with each valid policy.
func (d *Daemon) applyPolicy(p *policy.Policy) {
	d.files.setPolicy(p)
	d.mu.Lock()
	st := d.stack
	d.mu.Unlock()
	if st != nil {
		st.setPolicy(p)
	}
}

func (d *Daemon) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// supervise keeps the actual state near the wanted one.
func (d *Daemon) supervise(ctx context.Context) {
	defer close(d.done)
	t := time.NewTicker(d.cfg.HealthInterval)
	defer t.Stop()
	d.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			d.mu.Lock()
			st := d.stack
			d.stack = nil
			d.mu.Unlock()
			if st != nil {
				st.close()
			}
			return
		case <-t.C:
		case <-d.kick:
		}
		d.reconcile(ctx)
	}
}

func (d *Daemon) setState(name, state string, healthy bool, msg, lastErr string) {
	c := d.comp[name]
	if c.State != state {
		c.Since = d.cfg.Now()
	}
	c.State, c.Healthy, c.Message = state, healthy, msg
	if lastErr != "" {
		c.LastError = lastErr
	}
}

// reconcile runs one supervision step. It holds d.mu only briefly around
// state changes; starting a sandbox takes a while and must not block Status.
func (d *Daemon) reconcile(ctx context.Context) {
	d.mu.Lock()
	want, st := d.want, d.stack
	d.mu.Unlock()
	if !want {
		return
	}
	if st == nil {
		d.mu.Lock()
		wait := d.cfg.Now().Before(d.nextTry)
		d.mu.Unlock()
		if wait {
			return
		}
		d.bringUp(ctx)
		return
	}
	// Health: the sandbox first; without it nothing else matters. Every
	// state change checks that st is still the current stack: Stop, Wipe
	// or Restart may have replaced it while we were checking.
	if err := st.long.Healthy(); err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		d.mu.Lock()
		if d.stack != st {
			d.mu.Unlock()
			return
		}
		d.stack = nil
		d.comp["sandbox"].Restarts++
		d.setState("sandbox", adminui.StateCrashed, false, "restarting", err.Error())
		d.mu.Unlock()
		d.log.Warn("sandbox crashed; recreating it", "err", err)
		d.sink.Emit(&audit.Event{TS: d.cfg.Now(), Type: audit.TypeSandbox, Agent: d.cfg.Agent, Action: "crash", Reason: err.Error()})
		st.close()
		d.poke()
		return
	}
	d.mu.Lock()
	if d.stack != st {
		d.mu.Unlock()
		return
	}
	msg := ""
	if !reflect.DeepEqual(st.sandboxCfg, d.watcher.Current().Sandbox) {
		msg = "the policy's sandbox settings changed; restart the sandbox to apply them"
	}
	d.setState("sandbox", adminui.StateRunning, true, msg, "")
	d.comp["sandbox"].Info = st.info()
	d.mu.Unlock()
	for _, name := range []string{"proxy", "dns"} {
		err := st.check(name)
		var refused error
		if err == nil {
			refused = st.refusal(name, d.watcher.Current())
		}
		d.mu.Lock()
		if d.stack != st {
			d.mu.Unlock()
			return
		}
		if err == nil {
			msg := ""
			if refused != nil {
				msg = "refused the current policy, running the previous one: " + refused.Error()
			}
			d.setState(name, adminui.StateRunning, true, msg, "")
			d.comp[name].Info = st.serviceInfo(name)
			d.mu.Unlock()
			continue
		}
		d.comp[name].Restarts++
		d.setState(name, adminui.StateCrashed, false, "restarting", err.Error())
		d.mu.Unlock()
		d.log.Warn("component unhealthy; restarting it", "component", name, "err", err)
		d.sink.Emit(&audit.Event{TS: d.cfg.Now(), Type: audit.TypeSandbox, Agent: d.cfg.Agent, Action: name + "_crash", Reason: err.Error()})
		if rerr := st.restart(name, d.watcher.Current()); rerr != nil {
			d.mu.Lock()
			if d.stack == st {
				d.setState(name, adminui.StateCrashed, false, "restart failed; retrying", rerr.Error())
			}
			d.mu.Unlock()
		}
	}
}

func (d *Daemon) bringUp(ctx context.Context) {
	d.mu.Lock()
	if !d.want {
		d.mu.Unlock()
		return
	}
	for _, n := range []string{"sandbox", "proxy", "dns"} {
		d.setState(n, adminui.StateStarting, false, "starting", "")
	}
	d.mu.Unlock()
	st, err := d.newStack(ctx, d.watcher.Current())
	d.mu.Lock()
	if err != nil {
		d.log.Error("sandbox start failed", "err", err)
		d.backoff = min(max(2*d.backoff, time.Second), 30*time.Second)
		d.nextTry = d.cfg.Now().Add(d.backoff)
		if d.want {
			for _, n := range []string{"sandbox", "proxy", "dns"} {
				d.setState(n, adminui.StateCrashed, false, fmt.Sprintf("start failed; retrying in %s", d.backoff), err.Error())
			}
		}
		d.mu.Unlock()
		return
	}
	if !d.want || ctx.Err() != nil {
		// Stopped while we were starting: undo it here, in the supervisor,
		// so a following start cannot collide with the teardown.
		if !d.want {
			for _, n := range []string{"sandbox", "proxy", "dns"} {
				d.setState(n, adminui.StateStopped, false, "stopped by the admin", "")
			}
		}
		d.mu.Unlock()
		st.close()
		return
	}
	d.backoff = 0
	d.stack = st
	d.setState("sandbox", adminui.StateRunning, true, "", "")
	d.comp["sandbox"].Info = st.info()
	for _, n := range []string{"proxy", "dns"} {
		d.setState(n, adminui.StateRunning, true, "", "")
		d.comp[n].Info = st.serviceInfo(n)
	}
	d.mu.Unlock()
}

// ---- adminui.Controller -------------------------------------------------

// Status is the dashboard's view.
func (d *Daemon) Status(ctx context.Context) adminui.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := adminui.Status{Agent: d.cfg.Agent, StartedAt: d.started}
	for _, n := range []string{"sandbox", "proxy", "dns"} {
		c := d.comp[n].ComponentStatus
		if c.Info != nil {
			m := make(map[string]string, len(c.Info))
			for k, v := range c.Info {
				m[k] = v
			}
			c.Info = m
		}
		s.Components = append(s.Components, c)
	}
	return s
}

// Start starts a stopped sandbox and waits until it runs (or fails).
func (d *Daemon) Start(ctx context.Context) error {
	d.mu.Lock()
	d.want = true
	d.nextTry = time.Time{}
	d.backoff = 0
	if d.stack == nil {
		// So that waitRunning does not take an earlier crash for this
		// attempt's result.
		for _, n := range []string{"sandbox", "proxy", "dns"} {
			d.setState(n, adminui.StateStarting, false, "start requested", "")
		}
	}
	d.mu.Unlock()
	d.emit("start_requested", nil)
	d.poke()
	return d.waitRunning(ctx)
}

// Stop stops the sandbox and its services; they stay stopped.
func (d *Daemon) Stop(ctx context.Context) error {
	d.mu.Lock()
	d.want = false
	st := d.stack
	d.stack = nil
	for _, n := range []string{"sandbox", "proxy", "dns"} {
		d.setState(n, adminui.StateStopped, false, "stopped by the admin", "")
		d.comp[n].Info = nil
	}
	d.mu.Unlock()
	if st != nil {
		st.close()
	}
	d.emit("stop_requested", nil)
	return nil
}

// Restart stops and starts the sandbox; the workspace is kept.
func (d *Daemon) Restart(ctx context.Context) error {
	if err := d.Stop(ctx); err != nil {
		return err
	}
	return d.Start(ctx)
}

// Wipe destroys the sandbox and creates a new one; emptyWorkspace also
// deletes the workspace's contents (not the directory itself).
func (d *Daemon) Wipe(ctx context.Context, emptyWorkspace bool) error {
	if err := d.Stop(ctx); err != nil {
		return err
	}
	if emptyWorkspace {
		if ws := d.workspace(); ws != "" {
			if err := safeToEmpty(ws, d.cfg.StateDir); err != nil {
				return err
			}
			if err := emptyDir(ws); err != nil {
				return fmt.Errorf("empty workspace: %w", err)
			}
		}
	}
	d.emit("wipe", map[string]string{"empty_workspace": fmt.Sprint(emptyWorkspace)})
	return d.Start(ctx)
}

func (d *Daemon) workspace() string {
	return d.watcher.Current().Sandbox.Workspace
}

// safeToEmpty refuses to empty a workspace that is a top-level directory
// ("/", "/home", "/tmp"...) or holds the state directory: a policy typo must
// not turn "wipe" into deleting the host's files.
func safeToEmpty(ws, stateDir string) error {
	abs, err := filepath.Abs(ws)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if strings.Count(filepath.Clean(abs), "/") < 2 {
		return fmt.Errorf("refusing to empty the workspace %s: a top-level directory", abs)
	}
	if st, err := filepath.Abs(stateDir); err == nil {
		if rel, err := filepath.Rel(abs, st); err == nil && !strings.HasPrefix(rel, "..") {
			return fmt.Errorf("refusing to empty the workspace %s: it holds the state directory %s", abs, st)
		}
	}
	return nil
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (d *Daemon) waitRunning(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		d.mu.Lock()
		st, c, want := d.stack, d.comp["sandbox"], d.want
		state, lastErr := c.State, c.LastError
		d.mu.Unlock()
		if st != nil {
			return nil
		}
		if !want {
			return errors.New("the sandbox was stopped before it started")
		}
		if state == adminui.StateCrashed && lastErr != "" {
			return errors.New(lastErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox did not start: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Exec starts a process in the running sandbox.
func (d *Daemon) Exec(ctx context.Context, req adminui.ExecRequest) (adminui.Process, error) {
	d.mu.Lock()
	st := d.stack
	d.mu.Unlock()
	if st == nil {
		return nil, errors.New("the sandbox is not running; start it from the dashboard")
	}
	p, err := st.long.Exec(ctx, sandbox.ExecSpec{Args: req.Cmd, TTY: req.TTY, Cols: req.Cols, Rows: req.Rows})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// secretSource adapts the store to credential.SecretSource.
func (d *Daemon) secretSource() credential.SecretSource {
	if d.cfg.Secrets != nil {
		return d.cfg.Secrets
	}
	return d.secrets
}

var _ adminui.Controller = (*Daemon)(nil)
