// Package connect is the data-plane side of connected mode: one outbound
// WebSocket to the control plane (see package wire) over which the data
// plane receives its effective policy, the secrets that policy references
// and lifecycle commands, and sends heartbeats, command results and its
// audit events. The control plane never dials the data plane.
//
// The policy received is merged with the local policy file (whose domains
// it replaces) and written atomically to PolicyPath, which the daemon
// watches: that file is also what a restart while disconnected enforces.
// Secret values stay in memory only (DefaultSecretTTL after the last
// contact). Audit events go through an on-disk Spool.
package connect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/policy"
	"github.com/coder/websocket"
	"gopkg.in/yaml.v3"
)

// Defaults.
const (
	DefaultHeartbeat  = 10 * time.Second
	DefaultBackoffMin = 500 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
	// batchDelay lets events accumulate into one batch.
	batchDelay = 100 * time.Millisecond
)

// Controller runs lifecycle commands (the daemon implements it).
type Controller interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Restart(ctx context.Context) error
	Wipe(ctx context.Context, emptyWorkspace bool) error
	Status(ctx context.Context) adminui.Status
}

// Config configures a Client.
type Config struct {
	// URL of the control plane: http(s)://host[:port][/prefix].
	URL   string
	Token string
	// BasePath is the local policy file; its domains are replaced by the
	// control plane's.
	BasePath string
	// StateDir holds connected/ (the persisted policy and the spool).
	StateDir string
	// PolicyPath is where the merged policy is written (default
	// <StateDir>/connected/policy.yaml); point the daemon at it.
	PolicyPath string
	// TLS for https URLs (CA pool, client certificate); nil: system roots.
	TLS *tls.Config

	Logger *slog.Logger
	Now    func() time.Time

	SecretTTL  time.Duration // default DefaultSecretTTL
	Heartbeat  time.Duration // default DefaultHeartbeat
	BackoffMin time.Duration
	BackoffMax time.Duration
	// SpoolBytes bounds the on-disk spool (default DefaultSpoolBytes).
	SpoolBytes int64
	// NoTerminal refuses the control plane's web terminal (term_open):
	// nobody gets a shell in the sandbox through the control plane.
	NoTerminal bool
	// OnState, if set, is called after a state from the control plane was
	// applied (policy file written), with its version.
	OnState func(version string)
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("connect: control plane URL %q: use http(s)://host[:port]", c.URL)
	}
	if c.Token == "" {
		return errors.New("connect: an agent token is required (--token, CAGENT_TOKEN or control_plane.token_file)")
	}
	if c.BasePath == "" || c.StateDir == "" {
		return errors.New("connect: BasePath and StateDir are required")
	}
	if c.PolicyPath == "" {
		c.PolicyPath = filepath.Join(c.StateDir, "connected", "policy.yaml")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SecretTTL <= 0 {
		c.SecretTTL = DefaultSecretTTL
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	return nil
}

// Client is a data plane's connection to the control plane. It is an
// audit.Sink (events go to the spool) and a credential.SecretSource.
type Client struct {
	cfg     Config
	log     *slog.Logger
	dir     string
	base    []byte
	spool   *Spool
	secrets *secretCache

	applyMu   sync.Mutex
	version   atomic.Value // string: version of the last applied state
	connected atomic.Bool
	noEnroll  atomic.Bool  // the control plane does not issue client certificates
	lastErr   atomic.Value // string

	cmdMu   sync.Mutex
	done    map[string]wire.Result // finished commands, by id (recent)
	order   []string
	running string
	pending []wire.Result // results not yet acknowledged
	kickHB  chan struct{}
	// cmdWG tracks running commands: they outlive a dropped connection
	// (a reconnect need not wait for them) but not Run.
	cmdWG sync.WaitGroup
}

// New reads the local policy, opens the spool, and writes the policy the
// data plane starts with: the last one received from the control plane
// (persisted), or, on a first start, the local policy with no domains
// (nothing allowed until the control plane answers).
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.StateDir, "connected")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	base, err := os.ReadFile(cfg.BasePath)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	c := &Client{cfg: cfg, log: cfg.Logger, dir: dir, base: base,
		secrets: &secretCache{now: cfg.Now, ttl: cfg.SecretTTL},
		done:    map[string]wire.Result{}, kickHB: make(chan struct{}, 1)}
	c.version.Store("")
	c.lastErr.Store("")
	cp, err := os.ReadFile(c.cpPath())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("connect: %w", err)
	}
	merged, _, err := mergePolicy(base, cp, cfg.URL)
	if err != nil && cp != nil {
		c.log.Error("the persisted control-plane policy no longer merges with the local policy; starting with no domains", "err", err)
		merged, _, err = mergePolicy(base, nil, cfg.URL)
	}
	if err != nil {
		return nil, err
	}
	if _, err := writeIfChanged(cfg.PolicyPath, merged); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	c.spool, err = OpenSpool(filepath.Join(dir, "spool"), cfg.SpoolBytes)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) cpPath() string { return filepath.Join(c.dir, "control-plane.yaml") }

// PolicyPath is the merged policy file to run.
func (c *Client) PolicyPath() string { return c.cfg.PolicyPath }

// Spool is the audit spool.
func (c *Client) Spool() *Spool { return c.spool }

// Connected reports whether the stream is up.
func (c *Client) Connected() bool { return c.connected.Load() }

// Version is the version of the last state applied in this process ("" before).
func (c *Client) Version() string { return c.version.Load().(string) }

// Secret implements credential.SecretSource from the in-memory cache.
func (c *Client) Secret(ctx context.Context, name string) (string, error) {
	return c.secrets.Secret(ctx, name)
}

// Emit implements audit.Sink: the event goes to the spool.
func (c *Client) Emit(e *audit.Event) {
	if e.TS.IsZero() {
		// Some emitters leave the time to the file writer; the control
		// plane files events by it.
		cp := *e
		cp.TS = c.cfg.Now().UTC()
		e = &cp
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	if _, err := c.spool.Append(b); err != nil {
		c.log.Warn("audit spool", "err", err)
	}
}

// Close closes the spool.
func (c *Client) Close() error { return c.spool.Close() }

// Run keeps the connection up until ctx ends, reconnecting with
// exponential backoff and jitter. ctl runs commands (nil: commands fail)
// and, when it is also an Execer (the daemon is), the shells of the
// control plane's web terminal (unless Config.NoTerminal).
func (c *Client) Run(ctx context.Context, ctl Controller) error {
	defer c.cmdWG.Wait()
	backoff := c.cfg.BackoffMin
	for {
		start := time.Now()
		err := c.session(ctx, ctl)
		c.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.lastErr.Store(err.Error())
			c.log.Warn("control plane connection lost; enforcing the last policy received", "err", err, "retry_in", backoff)
		}
		if time.Since(start) > 30*time.Second {
			backoff = c.cfg.BackoffMin
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, c.cfg.BackoffMax)
	}
}

// jitter draws the wait before a reconnect from the upper half of the
// current backoff step, so that data planes dropped together (a control
// plane restart) do not all come back at the same instant.
func jitter(backoff time.Duration) time.Duration {
	return backoff/2 + rand.N(backoff/2+1)
}

func (c *Client) streamURL() string {
	u, _ := url.Parse(c.cfg.URL)
	u.Path = strings.TrimSuffix(u.Path, "/") + wire.Path
	return u.String()
}

// session is one connection: dial, then read, heartbeat and ship logs
// until something fails.
func (c *Client) session(ctx context.Context, ctl Controller) error {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.tlsConfig(ctx), Proxy: nil, ForceAttemptHTTP2: false}}
	defer hc.CloseIdleConnections()
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, resp, err := websocket.Dial(dctx, c.streamURL(), &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + c.cfg.Token}},
	})
	cancel()
	if err != nil {
		if resp != nil {
			return fmt.Errorf("connect to %s: %s", c.cfg.URL, resp.Status)
		}
		return fmt.Errorf("connect to %s: %w", c.cfg.URL, err)
	}
	conn.SetReadLimit(wire.MaxMessage)
	defer conn.CloseNow()
	c.connected.Store(true)
	c.log.Info("connected to the control plane", "url", c.cfg.URL)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	s := &session{c: c, conn: conn, ctl: ctl, runCtx: ctx, acks: make(chan uint64, 4), hbAcks: make(chan struct{}, 8), contact: make(chan struct{}, 1)}
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); errc <- s.read(ctx) }()
	go func() { defer wg.Done(); errc <- s.heartbeats(ctx) }()
	go func() { defer wg.Done(); errc <- s.ship(ctx) }()
	err = <-errc
	stop()
	conn.CloseNow()
	wg.Wait()
	s.termWG.Wait()
	return err
}

type session struct {
	c      *Client
	conn   *websocket.Conn
	ctl    Controller
	runCtx context.Context // Run's: commands end with it, not with the session
	wmu    sync.Mutex

	acks    chan uint64 // logs_ack last_seq
	hbAcks  chan struct{}
	contact chan struct{}
	sentHB  [][]string // command result ids per heartbeat in flight
	hbMu    sync.Mutex

	// Terminal sessions (terminal.go); they end with the connection.
	tmu    sync.Mutex
	terms  map[string]*term
	termWG sync.WaitGroup
}

func (s *session) send(ctx context.Context, m *wire.Msg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return s.conn.Write(wctx, websocket.MessageText, b)
}

func (s *session) read(ctx context.Context) error {
	for {
		_, b, err := s.conn.Read(ctx)
		if err != nil {
			if cs := websocket.CloseStatus(err); cs != -1 {
				var ce websocket.CloseError
				if errors.As(err, &ce) && ce.Reason != "" {
					return fmt.Errorf("closed by the control plane: %s", ce.Reason)
				}
			}
			return err
		}
		s.c.secrets.touch()
		select {
		case s.contact <- struct{}{}:
		default:
		}
		var m wire.Msg
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("invalid message from the control plane: %w", err)
		}
		switch m.Type {
		case wire.TypeState:
			if err := s.c.applyState(&m); err != nil {
				// Keep running the last good policy; the error is logged
				// and reported in heartbeats.
				s.c.lastErr.Store(err.Error())
				s.c.log.Error("policy from the control plane refused; the last good one stays in force", "err", err)
			}
		case wire.TypeCommand:
			if m.Command != nil {
				s.command(*m.Command)
			}
		case wire.TypeHeartbeatAck:
			s.hbMu.Lock()
			if len(s.sentHB) > 0 {
				ids := s.sentHB[0]
				s.sentHB = s.sentHB[1:]
				s.c.clearResults(ids)
			}
			s.hbMu.Unlock()
		case wire.TypeLogsAck:
			if m.Message != "" {
				s.c.log.Warn("control plane refused some audit events", "detail", m.Message)
			}
			select {
			case s.acks <- m.LastSeq:
			case <-ctx.Done():
				return ctx.Err()
			}
		case wire.TypeTermOpen:
			if err := s.termOpen(ctx, &m); err != nil {
				return err
			}
		case wire.TypeTermData:
			s.termInput(&m)
		case wire.TypeTermResize:
			s.termResize(&m)
		case wire.TypeTermClose:
			s.termClose(&m)
		case wire.TypeError:
			return fmt.Errorf("control plane error %s: %s", m.Error, m.Message)
		}
	}
}

// applyState persists the control plane's policy, merges it with the
// local one and writes the file the daemon runs; secrets go to memory.
func (c *Client) applyState(m *wire.Msg) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	merged, _, err := mergePolicy(c.base, []byte(m.PolicyYAML), c.cfg.URL)
	if err != nil {
		return err
	}
	// Secrets first: a new credential finds its value when the policy
	// that uses it applies.
	c.secrets.set(m.Secrets)
	if _, err := writeIfChanged(c.cpPath(), []byte(m.PolicyYAML)); err != nil {
		return err
	}
	if _, err := writeIfChanged(c.cfg.PolicyPath, merged); err != nil {
		return err
	}
	c.version.Store(m.Version)
	c.lastErr.Store("")
	if c.cfg.OnState != nil {
		c.cfg.OnState(m.Version)
	}
	return nil
}

func (s *session) heartbeats(ctx context.Context) error {
	t := time.NewTicker(s.c.cfg.Heartbeat)
	defer t.Stop()
	last := time.Now()
	if err := s.heartbeat(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.contact:
			last = time.Now()
			continue
		case <-t.C:
			// The control plane answers every heartbeat: silence for three
			// intervals means the connection is dead (a half-open TCP).
			if time.Since(last) > 3*s.c.cfg.Heartbeat {
				return errors.New("no message from the control plane for 3 heartbeat intervals")
			}
		case <-s.c.kickHB:
		}
		if err := s.heartbeat(ctx); err != nil {
			return err
		}
	}
}

func (s *session) heartbeat(ctx context.Context) error {
	status, metrics := "running", map[string]any{}
	if s.ctl != nil {
		st := s.ctl.Status(ctx)
		for _, comp := range st.Components {
			metrics[comp.Name] = comp.State
			metrics[comp.Name+"_restarts"] = comp.Restarts
			if comp.Name == "sandbox" {
				status = comp.State
			}
		}
	}
	metrics["spool_pending"] = s.c.spool.Pending()
	metrics["spool_dropped"] = s.c.spool.Dropped()
	metrics["policy_version"] = s.c.Version()
	if e := s.c.lastErr.Load().(string); e != "" {
		metrics["last_error"] = truncate(e, 512)
	}
	mb, _ := json.Marshal(metrics)
	results := s.c.pendingResults()
	ids := make([]string, len(results))
	for i, r := range results {
		ids[i] = r.ID
	}
	s.hbMu.Lock()
	s.sentHB = append(s.sentHB, ids)
	s.hbMu.Unlock()
	return s.send(ctx, &wire.Msg{Type: wire.TypeHeartbeat, Status: status, Metrics: mb, Results: results})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// ship sends spooled events in batches, one batch in flight, and deletes
// them when acknowledged. After a reconnect it starts again from the last
// acknowledged event; the control plane ignores what it already has.
func (s *session) ship(ctx context.Context) error {
	sp := s.c.spool
	from := sp.Acked() + 1
	for {
		first, entries, err := sp.Read(from, wire.MaxLogBatch, 1<<20)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-sp.Notify():
			}
			// Let a burst accumulate into one batch.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(batchDelay):
			}
			continue
		}
		if err := s.send(ctx, &wire.Msg{Type: wire.TypeLogs, Spool: sp.ID(), FirstSeq: first, Entries: entries}); err != nil {
			return err
		}
		last := first + uint64(len(entries)) - 1
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return errors.New("no acknowledgement for a batch of audit events")
		case got := <-s.acks:
			if got != last {
				return fmt.Errorf("acknowledgement for %d, expected %d", got, last)
			}
		}
		if err := sp.Ack(last); err != nil {
			return err
		}
		from = last + 1
	}
}

// EnvToken is the environment variable that may hold the agent token.
const EnvToken = "CAGENT_TOKEN"

// Resolve fills URL, Token and TLS of cfg for a data plane started with
// the local policy file at cfg.BasePath: urlFlag and tokenFlag (command
// line) win, then the policy's control_plane.url, CAGENT_TOKEN and
// control_plane.token_file; control_plane.ca_file becomes the TLS root
// pool. ok is false when the data plane is not in connected mode.
func Resolve(cfg *Config, urlFlag, tokenFlag string, getenv func(string) string) (ok bool, err error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	b, err := os.ReadFile(cfg.BasePath)
	if err != nil {
		return false, err
	}
	var loose struct {
		Mode         string               `yaml:"mode"`
		ControlPlane *policy.ControlPlane `yaml:"control_plane"`
	}
	if err := yaml.Unmarshal(b, &loose); err != nil {
		return false, fmt.Errorf("%s: %w", cfg.BasePath, err)
	}
	if urlFlag == "" && loose.Mode != "connected" {
		return false, nil
	}
	cp := loose.ControlPlane
	if cp == nil {
		cp = &policy.ControlPlane{}
	}
	cfg.URL = urlFlag
	if cfg.URL == "" {
		cfg.URL = cp.URL
	}
	cfg.Token = strings.TrimSpace(tokenFlag)
	if cfg.Token == "" {
		cfg.Token = strings.TrimSpace(getenv(EnvToken))
	}
	if cfg.Token == "" && cp.TokenFile != "" {
		t, err := os.ReadFile(cp.TokenFile)
		if err != nil {
			return true, fmt.Errorf("control_plane.token_file: %w", err)
		}
		cfg.Token = strings.TrimSpace(string(t))
	}
	if cp.CAFile != "" {
		pem, err := os.ReadFile(cp.CAFile)
		if err != nil {
			return true, fmt.Errorf("control_plane.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return true, fmt.Errorf("control_plane.ca_file %s: no PEM certificates", cp.CAFile)
		}
		if cfg.TLS == nil {
			cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		cfg.TLS.RootCAs = pool
	}
	return true, cfg.Validate()
}
