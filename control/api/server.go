// Package api is the control plane's REST API under /api/v1: tenants,
// tokens, agents, domain policies, secrets, IP ACLs, commands, audit trail
// and logs. Authorization is decided per route from the token's kind and
// tenant; another tenant's objects answer 404 exactly like missing ones.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagent-dev/cagent/control/keys"
	"github.com/cagent-dev/cagent/control/store"
	"golang.org/x/time/rate"
)

// Defaults.
const (
	DefaultOnlineWindow = 60 * time.Second
	DefaultRate         = 50 // requests per second per token
	DefaultBurst        = 100
	DefaultMaxBody      = 64 << 10
	DefaultMaxLogBody   = 1 << 20
	DefaultMaxLogBatch  = 500
	DefaultMaxLogEntry  = 16 << 10
)

// Config configures the API server.
type Config struct {
	Store   store.Store
	Hasher  *keys.Hasher
	Keyring *keys.Keyring
	// ReloadKeyring, when set, is called when a secret is sealed under a key
	// the keyring lacks (after cagent control rotate-key); the new keyring
	// replaces the old one.
	ReloadKeyring func() (*keys.Keyring, error)
	Logger        *slog.Logger
	Now           func() time.Time

	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Rate and Burst bound each token's request rate (429 beyond).
	Rate  rate.Limit
	Burst int
	// AuthFailLimit failed token attempts from one source address (an
	// IPv4 address or IPv6 /64) within AuthFailWindow make every token
	// attempt from there answer 429 until the window ends; AuthFailTrack
	// bounds the sources counted per window. Defaults: 20 per minute,
	// 65536 sources. A negative AuthFailLimit turns the throttle off.
	AuthFailLimit  int
	AuthFailWindow time.Duration
	AuthFailTrack  int
	// Quotas bound each tenant's objects (DefaultQuotas for zero fields).
	Quotas Quotas
	// OnlineWindow: an agent is online while its last heartbeat is younger.
	OnlineWindow time.Duration
	MaxLogBatch  int
	MaxLogBody   int64
	// HeartbeatFlush is how often buffered heartbeats are written.
	HeartbeatFlush time.Duration
	// Notify, when set, is called after a change that affects what an
	// agent should run (policy, secret, command, token); agentID "" means
	// every agent of the tenant. It must not block.
	Notify func(tenantID, agentID string)
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.Store == nil || c.Hasher == nil || c.Keyring == nil {
		return errors.New("api: Store, Hasher and Keyring are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	c.Quotas.fill()
	if c.AuthFailLimit == 0 {
		c.AuthFailLimit = DefaultAuthFailLimit
	}
	if c.AuthFailWindow <= 0 {
		c.AuthFailWindow = DefaultAuthFailWindow
	}
	if c.AuthFailTrack <= 0 {
		c.AuthFailTrack = DefaultAuthFailTrack
	}
	if c.OnlineWindow == 0 {
		c.OnlineWindow = DefaultOnlineWindow
	}
	if c.HeartbeatFlush <= 0 {
		c.HeartbeatFlush = DefaultHeartbeatFlush
	}
	if c.MaxLogBatch == 0 {
		c.MaxLogBatch = DefaultMaxLogBatch
	}
	if c.MaxLogBody == 0 {
		c.MaxLogBody = DefaultMaxLogBody
	}
	return nil
}

// Server serves the API.
type Server struct {
	cfg    Config
	st     store.Store
	log    *slog.Logger
	routes []Route
	mux    *http.ServeMux

	keyring atomic.Pointer[keys.Keyring]

	hbMu       sync.Mutex
	hbBuf      map[hbKey]store.HeartbeatUpdate
	hbFlushing map[hbKey]store.HeartbeatUpdate
	hbStop     chan struct{}
	hbDone     chan struct{}
	closeOnce  sync.Once

	mu       sync.Mutex
	limiters map[string]*limiter
	calls    int

	fails *failCounter // nil: failed token attempts are not throttled

	// Unused web-terminal tickets (terminal.go), this replica only.
	termMu  sync.Mutex
	tickets map[string]termTicket
	// termHub is the hub Mount serves terminals through (nil before).
	termHub *Hub

	// The OpenAPI document, built once: it is public, and building it
	// costs thousands of allocations.
	openapiOnce sync.Once
	openapiJSON []byte
}

type limiter struct {
	lim  *rate.Limiter
	last time.Time
}

// New returns a Server. Close it to write buffered heartbeats.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Logger, limiters: map[string]*limiter{},
		hbBuf: map[hbKey]store.HeartbeatUpdate{}, hbStop: make(chan struct{}), hbDone: make(chan struct{})}
	s.keyring.Store(cfg.Keyring)
	if cfg.AuthFailLimit > 0 {
		s.fails = newFailCounter(cfg.AuthFailLimit, cfg.AuthFailWindow, cfg.AuthFailTrack)
	}
	s.routes = s.buildRoutes()
	s.mux = http.NewServeMux()
	for _, rt := range s.routes {
		s.mux.Handle(rt.Method+" "+rt.Pattern, s.wrap(rt))
	}
	// Requests no route takes: 405 with Allow when the path exists with
	// other methods, else 404, both as JSON errors.
	other := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range s.routes {
		allowed[rt.Pattern] = append(allowed[rt.Pattern], rt.Method)
	}
	for pat, methods := range allowed {
		allow := strings.Join(methods, ", ")
		other.HandleFunc(pat, func(w http.ResponseWriter, r *http.Request) {
			rid := newRequestID()
			w.Header().Set("X-Request-Id", rid)
			w.Header().Set("Allow", allow)
			writeError(w, rid, http.StatusMethodNotAllowed, "method_not_allowed", "use "+allow, "")
		})
	}
	other.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		rid := newRequestID()
		w.Header().Set("X-Request-Id", rid)
		writeError(w, rid, http.StatusNotFound, "not_found", "no such endpoint", "")
	})
	s.mux.Handle("/", other)
	go s.heartbeatLoop(cfg.HeartbeatFlush)
	return s, nil
}

// Handler returns the HTTP handler. No answer of the API is to be sniffed
// as another type by a browser (some carry text agents or tenants wrote).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		s.mux.ServeHTTP(w, r)
	})
}

// Routes returns the route table (for the OpenAPI document and tests).
func (s *Server) Routes() []Route { return s.routes }

// OutsideRoutes returns the routes Mount serves outside the route table
// (the agent stream and enrolment), as documented.
func (s *Server) OutsideRoutes() []Route { return outsideRoutes() }

// Route is one endpoint.
type Route struct {
	Method  string
	Pattern string
	Summary string
	// Kinds allowed; nil means public (no token).
	Kinds []string
	// Body is a zero value of the request body type, or nil.
	Body any
	// Resp is a zero value of the success response type, or nil (no body,
	// or not JSON).
	Resp any
	// Query lists the query parameters understood.
	Query []string
	// WebSocket: a GET that upgrades; the document lists the messages.
	WebSocket bool
	h         func(*call) error
}

// Principal is an authenticated token.
type Principal struct {
	TokenID  string
	Kind     string
	TenantID string
	AgentID  string
	// openCommand: at authentication, the agent had an unfinished command.
	openCommand bool
	// expiresAt is the token's expiry (zero: none).
	expiresAt time.Time
}

// call is one request being served.
type call struct {
	w        http.ResponseWriter
	r        *http.Request
	s        *Server
	rid      string
	client   netip.Addr
	p        Principal
	tenantID string // the tenant the request acts on, when the route has one
}

// apiError is an error answered as {"error", "message", "request_id"}.
type apiError struct {
	status int
	code   string
	msg    string
	field  string
	retry  time.Duration
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func fieldErr(field, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "invalid_request", field: field, msg: field + ": " + fmt.Sprintf(format, args...)}
}

var (
	errNotFound     = errf(http.StatusNotFound, "not_found", "not found")
	errUnauthorized = errf(http.StatusUnauthorized, "unauthorized", "missing, invalid, expired or revoked token")
	errForbidden    = errf(http.StatusForbidden, "forbidden", "this token may not use this endpoint")
)

func newRequestID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

type errorBody struct {
	Error     string `json:"error"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	Field     string `json:"field,omitempty"`
}

func writeError(w http.ResponseWriter, rid string, status int, code, msg, field string) {
	writeJSON(w, status, errorBody{Error: code, Message: msg, RequestID: rid, Field: field})
}

func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{w: w, r: r, s: s, rid: newRequestID()}
		w.Header().Set("X-Request-Id", c.rid)
		w.Header().Set("Cache-Control", "no-store")
		c.client = s.clientAddr(r)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		c.w = sw
		start := time.Now()
		err := s.authorize(c, rt)
		if err == nil {
			err = rt.h(c)
		}
		if err != nil {
			c.fail(err)
		}
		if s.log.Enabled(r.Context(), slog.LevelDebug) {
			s.log.Debug("request", "request_id", c.rid, "method", r.Method, "route", rt.Pattern, "status", sw.status,
				"duration", time.Since(start), "token_id", c.p.TokenID, "client", c.client.String())
		}
	})
}

func (c *call) fail(err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		switch {
		case errors.Is(err, store.ErrNotFound):
			ae = errNotFound
		case errors.Is(err, store.ErrConflict):
			ae = errf(http.StatusConflict, "conflict", "already exists")
		default:
			c.s.log.Error("request failed", "request_id", c.rid, "method", c.r.Method, "path", c.r.URL.Path, "err", err)
			ae = errf(http.StatusInternalServerError, "internal", "internal error")
		}
	}
	if ae.retry > 0 {
		c.w.Header().Set("Retry-After", strconv.Itoa(int((ae.retry+time.Second-1)/time.Second)))
	}
	writeError(c.w, c.rid, ae.status, ae.code, ae.msg, ae.field)
}

// clientAddr is the peer address, or the right-most X-Forwarded-For entry
// not in a trusted proxy when the peer is a trusted proxy; the zero Addr
// (which no IP ACL allows) when that entry does not parse.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if !s.trusted(addr) {
		return addr
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := forwardedAddr(hops[i])
		if !ok {
			// Unparseable: the client is unknown. Returning the last
			// trusted hop instead would make a proxy that writes entries
			// we cannot read (or a client that injects one the proxy
			// passes on) look like the proxy itself, inside any ACL that
			// allows the proxy's network.
			return netip.Addr{}
		}
		if !s.trusted(a) {
			return a
		}
		addr = a
	}
	return addr
}

// forwardedAddr reads one X-Forwarded-For entry: an address, or an
// address with a port ("192.0.2.1:443", "[2001:db8::1]:443"), which some
// proxies write.
func forwardedAddr(v string) (netip.Addr, bool) {
	v = strings.TrimSpace(v)
	a, err := netip.ParseAddr(v)
	if err != nil {
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// authenticate checks the bearer token.
func (s *Server) authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	h := r.Header.Get("Authorization")
	plain, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return Principal{}, errUnauthorized
	}
	id, secret, ok := keys.ParseToken(strings.TrimSpace(plain))
	if !ok {
		return Principal{}, errUnauthorized
	}
	t, err := s.st.GetTokenForAuth(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, errUnauthorized
	}
	if err != nil {
		return Principal{}, err
	}
	if !s.cfg.Hasher.Verify(t.Salt, t.Hash, secret) || t.Disabled {
		return Principal{}, errUnauthorized
	}
	if !t.ExpiresAt.IsZero() && !s.cfg.Now().Before(t.ExpiresAt) {
		return Principal{}, errUnauthorized
	}
	p := Principal{TokenID: t.ID, Kind: t.Kind, TenantID: t.TenantID, AgentID: t.AgentID, openCommand: t.OpenCommand, expiresAt: t.ExpiresAt}
	if t.Kind == store.KindAgent && !t.AgentActive {
		return Principal{}, errUnauthorized
	}
	return p, nil
}

// reserve takes one request from the token's bucket and returns how long
// the caller must wait before acting on it (0: at once).
func (s *Server) reserve(tokenID string, cancelIfLate bool) time.Duration {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.calls%10000 == 0 {
		for k, l := range s.limiters {
			if now.Sub(l.last) > 10*time.Minute {
				delete(s.limiters, k)
			}
		}
	}
	l := s.limiters[tokenID]
	if l == nil {
		l = &limiter{lim: rate.NewLimiter(s.cfg.Rate, s.cfg.Burst)}
		s.limiters[tokenID] = l
	}
	l.last = now
	res := l.lim.ReserveN(now, 1)
	d := res.DelayFrom(now)
	if d > 0 && cancelIfLate {
		res.CancelAt(now)
	}
	return d
}

// allow reports whether the token may make a request now, or how long to
// wait (the request is then not counted).
func (s *Server) allow(tokenID string) (bool, time.Duration) {
	if d := s.reserve(tokenID, true); d > 0 {
		return false, d
	}
	return true, 0
}

// pace waits until the token's bucket admits one more message (the agent
// stream: slowing the reader pushes back on the sender instead of
// dropping what it sends).
func (s *Server) pace(ctx context.Context, tokenID string) error {
	d := s.reserve(tokenID, false)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *Server) authorize(c *call, rt Route) error {
	if rt.Kinds == nil {
		return nil
	}
	ctx := c.r.Context()
	p, err := s.authn(c)
	if err != nil {
		return err
	}
	c.p = p
	if ok, wait := s.allow(p.TokenID); !ok {
		return &apiError{status: http.StatusTooManyRequests, code: "rate_limited", msg: "too many requests for this token; retry later", retry: wait}
	}
	if p.Kind == store.KindAdmin || p.Kind == store.KindDev {
		if err := s.checkACL(ctx, p.TenantID, c.client); err != nil {
			return err
		}
	}
	if tid := c.r.PathValue("tenant"); strings.Contains(rt.Pattern, "{tenant}") {
		// Tenant first, then kind: another tenant's objects are simply
		// not there, whatever the token's kind.
		if p.Kind != store.KindSuperadmin && tid != p.TenantID {
			return errNotFound
		}
		if _, err := s.st.GetTenant(ctx, tid); err != nil {
			return err
		}
		c.tenantID = tid
	} else if p.Kind != store.KindSuperadmin {
		c.tenantID = p.TenantID
	}
	if !slices.Contains(rt.Kinds, p.Kind) {
		return errForbidden
	}
	return nil
}

func (s *Server) checkACL(ctx context.Context, tenantID string, client netip.Addr) error {
	acls, err := s.st.ListACLs(ctx, tenantID)
	if err != nil {
		return err
	}
	if len(acls) == 0 {
		return nil
	}
	for _, a := range acls {
		if p, err := netip.ParsePrefix(a.CIDR); err == nil && client.IsValid() && p.Contains(client) {
			return nil
		}
	}
	// Do not echo the address: the response may reach whoever spoofed it.
	return errf(http.StatusForbidden, "ip_not_allowed", "requests from this address are not allowed by the tenant's IP ACL")
}

// change runs fn in one transaction: the change and its audit record
// commit together or not at all.
func (c *call) change(fn func(st store.Store) error) error {
	return c.s.st.InTx(c.r.Context(), fn)
}

// audit records, through st (the change's transaction), who made a change,
// what, when and from where.
func (c *call) audit(st store.Store, action, objType, objID string, detail map[string]any) error {
	var d json.RawMessage
	if len(detail) > 0 {
		d, _ = json.Marshal(detail)
	}
	tenant := c.tenantID
	if t, ok := detail["tenant_id"].(string); ok && tenant == "" {
		tenant = t
	}
	return st.AppendAudit(c.r.Context(), store.AuditEntry{
		ID: store.NewID(), TS: c.s.cfg.Now(), TenantID: tenant, ActorID: c.p.TokenID, ActorKind: c.p.Kind,
		Action: action, ObjectType: objType, ObjectID: objID, RemoteAddr: c.client.String(), RequestID: c.rid, Detail: d,
	})
}

func (s *Server) notify(tenantID, agentID string) {
	if s.cfg.Notify != nil {
		s.cfg.Notify(tenantID, agentID)
	}
}

// seal encrypts a secret value with the active key.
func (s *Server) seal(tenantID, name string, value []byte) (string, []byte, error) {
	return s.keyring.Load().Seal(value, SecretAAD(tenantID, name))
}

// open decrypts a secret, reloading the keyring once if the value was
// sealed under a key it does not hold.
func (s *Server) open(x store.Secret) ([]byte, error) {
	kr := s.keyring.Load()
	if !kr.Has(x.KeyID) && s.cfg.ReloadKeyring != nil {
		nk, err := s.cfg.ReloadKeyring()
		if err != nil {
			return nil, fmt.Errorf("reloading keyring: %w", err)
		}
		s.keyring.CompareAndSwap(kr, nk)
		kr = s.keyring.Load()
	}
	return kr.Open(x.KeyID, x.Sealed, SecretAAD(x.TenantID, x.Name))
}

// statusWriter remembers the status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
