// Package control is the Cagent control plane: a multi-tenant REST API
// (package api) over a SQLite or PostgreSQL store (package store), with
// tokens and secrets protected by package keys. Run serves it until the
// context ends.
package control

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cagent-dev/cagent/control/agentca"
	"github.com/cagent-dev/cagent/control/api"
	"github.com/cagent-dev/cagent/control/keys"
	"github.com/cagent-dev/cagent/control/store"
	"golang.org/x/time/rate"
)

// Environment variables that may hold the keys instead of files.
const (
	EnvTokenKey   = "CAGENT_CONTROL_TOKEN_KEY"   // base64, >= 32 bytes
	EnvSecretKeys = "CAGENT_CONTROL_SECRET_KEYS" // "ID BASE64KEY" entries, comma-separated, active last
)

// Defaults.
const (
	DefaultListen       = "127.0.0.1:8090"
	DefaultDataDir      = "/var/lib/cagent-control"
	DefaultLogRetention = 7 * 24 * time.Hour
)

// Config configures the control plane.
type Config struct {
	// DB is "sqlite:PATH" or "postgres://..."; default sqlite:<DataDir>/control.db.
	DB      string
	Listen  string
	DataDir string
	// TLSCert and TLSKey, when set, serve HTTPS. Without them, put the
	// server behind a TLS-terminating proxy (and list it in TrustedProxies).
	TLSCert string
	TLSKey  string
	// TokenKeyFile and SecretKeyFile default to files in DataDir; the
	// environment variables above take precedence when set.
	TokenKeyFile  string
	SecretKeyFile string

	TrustedProxies []netip.Prefix
	Rate           rate.Limit
	Burst          int
	// AuthFailLimit and AuthFailWindow throttle failed token attempts per
	// source address (api.Config; defaults 20 per minute, negative: off).
	AuthFailLimit  int
	AuthFailWindow time.Duration
	// Quotas bound each tenant's objects (api.DefaultQuotas when zero).
	Quotas       api.Quotas
	LogRetention time.Duration

	Logger *slog.Logger
	Now    func() time.Time
	// Stdout receives the bootstrap super-admin token on first start.
	Stdout io.Writer
	// Ready, when set, receives the listening address once serving.
	Ready func(addr net.Addr)
	// Notify is called when an agent's policy, secrets or commands change.
	Notify func(tenantID, agentID string)
	// Hub wakes the connected data planes' streams (created by Open when nil).
	Hub *api.Hub
	// Stream tunes the agent stream (connected mode).
	Stream api.StreamOptions
	// AgentMTLS: data planes enroll for a client certificate from the
	// control plane's own CA (in DataDir) and every agent route requires
	// it. Needs TLSCert.
	AgentMTLS bool
	agentCA   *agentca.CA
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen %q: %w", c.Listen, err)
	}
	if c.DB == "" {
		c.DB = "sqlite:" + filepath.Join(c.DataDir, "control.db")
	}
	if !strings.HasPrefix(c.DB, "sqlite:") && !strings.HasPrefix(c.DB, "postgres://") && !strings.HasPrefix(c.DB, "postgresql://") {
		return fmt.Errorf("db %q: use sqlite:PATH or postgres://...", c.DB)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("set both TLS certificate and key, or neither")
	}
	if c.TokenKeyFile == "" {
		c.TokenKeyFile = filepath.Join(c.DataDir, "token.key")
	}
	if c.SecretKeyFile == "" {
		c.SecretKeyFile = filepath.Join(c.DataDir, "secrets.keyring")
	}
	if c.LogRetention == 0 {
		c.LogRetention = DefaultLogRetention
	}
	if c.LogRetention < 0 {
		return errors.New("log retention must be positive")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	return nil
}

// Open opens the store and keys named by cfg (which must be validated) and
// returns an API server over them. Close the server, then the store, when done.
func Open(ctx context.Context, cfg *Config) (*api.Server, *store.SQL, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, err
	}
	tk, err := keys.LoadOrCreate(cfg.TokenKeyFile, EnvTokenKey)
	if err != nil {
		return nil, nil, fmt.Errorf("token key: %w", err)
	}
	hasher, err := keys.NewHasher(tk)
	if err != nil {
		return nil, nil, err
	}
	kr, _, err := keys.LoadOrCreateKeyring(cfg.SecretKeyFile, EnvSecretKeys)
	if err != nil {
		return nil, nil, fmt.Errorf("secret keys: %w", err)
	}
	st, err := store.Open(ctx, cfg.DB, cfg.Now)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Hub == nil {
		cfg.Hub = api.NewHub()
	}
	hub, notify := cfg.Hub, cfg.Notify
	srv, err := api.New(api.Config{
		Store: st, Hasher: hasher, Keyring: kr, Logger: cfg.Logger, Now: cfg.Now,
		ReloadKeyring: func() (*keys.Keyring, error) {
			kr, _, err := keys.LoadOrCreateKeyring(cfg.SecretKeyFile, EnvSecretKeys)
			return kr, err
		},
		TrustedProxies: cfg.TrustedProxies, Rate: cfg.Rate, Burst: cfg.Burst,
		AuthFailLimit: cfg.AuthFailLimit, AuthFailWindow: cfg.AuthFailWindow, Quotas: cfg.Quotas,
		Notify: func(tenantID, agentID string) {
			hub.Notify(tenantID, agentID)
			if notify != nil {
				notify(tenantID, agentID)
			}
		},
	})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	if err := bootstrap(ctx, st, hasher, cfg); err != nil {
		srv.Close()
		st.Close()
		return nil, nil, err
	}
	if err := attachRelay(ctx, cfg); err != nil {
		srv.Close()
		st.Close()
		return nil, nil, fmt.Errorf("change notifications: %w", err)
	}
	return srv, st, nil
}

// bootstrap creates the first super-admin token, once per database, and
// prints it: it is never shown again.
func bootstrap(ctx context.Context, st store.Store, h *keys.Hasher, cfg *Config) error {
	tok, err := h.NewToken()
	if err != nil {
		return err
	}
	first, err := st.SetMetaOnce(ctx, "bootstrap_token", tok.ID)
	if err != nil || !first {
		return err
	}
	now := cfg.Now().UTC()
	if err := st.CreateToken(ctx, store.Token{ID: tok.ID, Kind: store.KindSuperadmin, Name: "bootstrap", Salt: tok.Salt, Hash: tok.Hash, CreatedAt: now}); err != nil {
		return err
	}
	_ = st.AppendAudit(ctx, store.AuditEntry{ID: store.NewID(), TS: now, ActorKind: "system", Action: "token.create", ObjectType: "token", ObjectID: tok.ID, RemoteAddr: "local", Detail: []byte(`{"kind":"superadmin","name":"bootstrap"}`)})
	_, err = fmt.Fprintf(cfg.Stdout, "Bootstrap super-admin token (shown once, store it now):\n%s\n", tok.Plain)
	return err
}

// Run serves the control plane until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	srv, st, err := Open(ctx, &cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	defer srv.Close() // before the store closes: writes buffered heartbeats
	var tlsConf *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if err := setupAgentMTLS(&cfg, tlsConf); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	hs := &http.Server{
		Handler:           Handler(srv, &cfg),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	cfg.Logger.Info("control plane listening", "addr", ln.Addr().String(), "db", redactDSN(cfg.DB), "tls", cfg.TLSCert != "")
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().IsLoopback() && cfg.TLSCert == "" {
		cfg.Logger.Warn("serving plain HTTP on a non-loopback address: tokens cross the network in clear unless a TLS proxy fronts this server")
	}
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	done := make(chan struct{})
	retention := make(chan struct{})
	go func() {
		defer close(retention)
		retain(ctx, done, st, &cfg)
	}()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = hs.Shutdown(sctx)
		cancel()
		<-errc
	}
	// Data-plane streams are hijacked connections Shutdown does not wait for.
	cfg.Hub.Close()
	close(done)
	<-retention
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// retain deletes logs older than the retention period every minute.
func retain(ctx context.Context, done <-chan struct{}, st store.Store, cfg *Config) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		n, err := st.DeleteLogsBefore(ctx, cfg.Now().Add(-cfg.LogRetention))
		if err != nil && ctx.Err() == nil {
			cfg.Logger.Warn("log retention", "err", err)
		} else if n > 0 {
			cfg.Logger.Info("log retention", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-t.C:
		}
	}
}

// redactDSN hides every password of a PostgreSQL address for the log: the
// user info's and the password and sslpassword parameters. An address
// that does not parse as a URL is hidden whole.
func redactDSN(dsn string) string {
	if !strings.HasPrefix(dsn, "postgres") {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		scheme, _, _ := strings.Cut(dsn, "://")
		return scheme + "://***"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		}
	}
	if q := u.Query(); q.Has("password") || q.Has("sslpassword") {
		for _, k := range []string{"password", "sslpassword"} {
			if q.Has(k) {
				q.Set(k, "REDACTED")
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// RotateKey generates a new secret-encryption key, makes it the active key
// and re-encrypts every secret with it. The keyring file keeps the old keys
// (decrypt-only) unless prune is set, so a running server that still seals
// with the old key, or an interruption, loses nothing; prune only with the
// server stopped. With the keys in the environment variable, the new keyring
// is written to out for the operator to install. A running server reloads
// the keyring file when it meets a value sealed under a key it lacks.
func RotateKey(ctx context.Context, cfg Config, prune bool, out io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	kr, fromEnv, err := keys.LoadOrCreateKeyring(cfg.SecretKeyFile, EnvSecretKeys)
	if err != nil {
		return err
	}
	newID, err := kr.Generate()
	if err != nil {
		return err
	}
	if !fromEnv {
		if err := keys.WriteKeyring(cfg.SecretKeyFile, kr); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, cfg.DB, cfg.Now)
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := Reencrypt(ctx, st, kr)
	if err != nil {
		return fmt.Errorf("re-encrypted %d secrets before failing: %w", n, err)
	}
	final := kr
	if prune {
		final = kr.OnlyActive()
	}
	if fromEnv {
		fmt.Fprintf(out, "Re-encrypted %d secrets with key %s. Set %s to:\n%s\n", n, newID, EnvSecretKeys, strings.TrimSpace(strings.ReplaceAll(final.String(), "\n", ",")))
		return nil
	}
	if err := keys.WriteKeyring(cfg.SecretKeyFile, final); err != nil {
		return err
	}
	fmt.Fprintf(out, "Re-encrypted %d secrets with key %s (now active in %s).\n", n, newID, cfg.SecretKeyFile)
	return nil
}

// Reencrypt seals every secret not under kr's active key with it.
func Reencrypt(ctx context.Context, st store.Store, kr *keys.Keyring) (int, error) {
	xs, err := st.ListAllSecrets(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, x := range xs {
		if x.KeyID == kr.Active() {
			continue
		}
		aad := api.SecretAAD(x.TenantID, x.Name)
		pt, err := kr.Open(x.KeyID, x.Sealed, aad)
		if err != nil {
			return n, fmt.Errorf("secret %s of tenant %s: %w", x.Name, x.TenantID, err)
		}
		kid, sealed, err := kr.Seal(pt, aad)
		if err != nil {
			return n, err
		}
		if err := st.Reseal(ctx, x.ID, x.KeyID, kid, sealed); err != nil && !errors.Is(err, store.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}
