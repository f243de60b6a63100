// Package adminui is the local admin API and web UI of `cagent up`: login
// with an admin token, the dashboard, the policy editor, logs, traffic
// analytics and a web terminal into the agent's sandbox.
//
// Security model: the UI listens on loopback by default (a non-loopback
// address requires TLS, enforced by the policy package). Every endpoint but
// /healthz needs a session, which only the admin token can create. The
// session cookie is HttpOnly and SameSite=Strict; every state-changing
// request must also carry the session's CSRF token in X-CSRF-Token and, if
// it has an Origin, a same-origin one; WebSockets must come from the UI's
// own origin. Host headers are checked on a loopback listener so a DNS
// rebinding page cannot talk to the API under a name it controls.
package adminui

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/audit"
)

// MaxStreams bounds concurrent terminals and live tails: each holds a
// goroutine, and a terminal a process in the sandbox.
const MaxStreams = 32

// acquireStream takes a stream slot, or answers 429.
func (s *Server) acquireStream(w http.ResponseWriter) (release func(), ok bool) {
	select {
	case s.streams <- struct{}{}:
		return func() { <-s.streams }, true
	default:
		writeError(w, http.StatusTooManyRequests, "too_many_streams", fmt.Sprintf("at most %d terminals and live tails at once; close some", MaxStreams))
		return nil, false
	}
}

// trackTerminal registers a terminal session with Close; false once closing.
func (s *Server) trackTerminal() bool {
	s.termMu.Lock()
	defer s.termMu.Unlock()
	if s.termDone {
		return false
	}
	s.termWG.Add(1)
	return true
}

// SessionCookie is the session cookie's name.
const SessionCookie = "cagent_session"

// CSRFHeader carries the session's CSRF token on state-changing requests.
const CSRFHeader = "X-CSRF-Token"

// Config configures a Server.
type Config struct {
	StateDir   string       // holds the admin token's hash
	PolicyPath string       // the cagent.yaml the daemon runs
	Policy     PolicySource // the running policy and reload status
	Controller Controller
	Events     *EventStore
	Audit      audit.Sink // admin actions are recorded here
	Logger     *slog.Logger
	Now        func() time.Time
	// TLS reports whether the listener serves TLS (cookies get Secure).
	TLS bool
	// LoopbackOnly makes the server refuse Host headers that are not
	// localhost or a loopback IP (DNS rebinding defence).
	LoopbackOnly bool
	// SessionIdle is how long an unused session lives (default 12h).
	SessionIdle time.Duration
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	switch {
	case c.StateDir == "":
		return errors.New("adminui: StateDir is required")
	case c.PolicyPath == "":
		return errors.New("adminui: PolicyPath is required")
	case c.Policy == nil:
		return errors.New("adminui: Policy is required")
	case c.Controller == nil:
		return errors.New("adminui: Controller is required")
	}
	if c.Events == nil {
		c.Events = NewEventStore(0, c.Now)
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SessionIdle <= 0 {
		c.SessionIdle = 12 * time.Hour
	}
	return nil
}

// Server is the admin HTTP handler.
type Server struct {
	cfg      Config
	sess     *sessions
	cfile    configFile
	mux      *http.ServeMux
	ui       http.Handler
	saveMu   sync.Mutex // serializes read-modify-write of the policy file
	termMu   sync.Mutex // orders termWG.Add against Close's Wait
	termDone bool
	termWG   sync.WaitGroup
	streams  chan struct{} // slots for terminals and live tails
	closed   chan struct{}
	closeOne sync.Once
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		sess:    newSessions(cfg.Now, cfg.SessionIdle),
		cfile:   configFile{path: cfg.PolicyPath},
		mux:     http.NewServeMux(),
		ui:      uiHandler(),
		closed:  make(chan struct{}),
		streams: make(chan struct{}, MaxStreams),
	}
	s.routes()
	return s, nil
}

// Close ends live tails and terminal sessions and waits for them.
func (s *Server) Close() {
	s.closeOne.Do(func() { close(s.closed) })
	s.termMu.Lock()
	s.termDone = true
	s.termMu.Unlock()
	s.termWG.Wait()
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("POST /api/login", s.login)
	m.Handle("POST /api/logout", s.authed(s.logout))
	m.Handle("GET /api/session", s.authed(s.session))
	m.Handle("GET /api/status", s.authed(s.status))
	m.Handle("POST /api/sandbox/{action}", s.authed(s.sandboxAction))
	m.Handle("GET /api/config", s.authed(s.getConfig))
	m.Handle("POST /api/config/validate", s.authed(s.validateConfig))
	m.Handle("PUT /api/config", s.authed(s.putConfig))
	m.Handle("PUT /api/config/domains", s.authed(s.putDomains))
	m.Handle("POST /api/config/allow", s.authed(s.allowDomain))
	m.Handle("GET /api/logs", s.authed(s.logs))
	m.Handle("GET /api/logs/stream", s.authed(s.logStream))
	m.Handle("GET /api/analytics", s.authed(s.analytics))
	m.Handle("GET /api/terminal", s.authed(s.terminal))
	// Unknown API paths need a session too: nothing under /api/ answers
	// an anonymous client but the login.
	m.Handle("/api/", s.authedAnyMethod(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such API endpoint")
	}))
	// The UI's static files are public: they hold no data, and the login
	// page has to load before there is a session.
	m.Handle("/", s.ui)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cfg.LoopbackOnly && !loopbackHost(r.Host) {
		writeError(w, http.StatusMisdirectedRequest, "bad_host", "the admin UI answers only to localhost and loopback addresses")
		return
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	if strings.HasPrefix(r.URL.Path, "/api/") {
		h.Set("Cache-Control", "no-store")
	}
	s.mux.ServeHTTP(w, r)
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type ctxKey struct{}

// authed requires a session, and for state-changing methods a matching
// CSRF token and a same-origin (or absent) Origin.
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(SessionCookie)
		if err != nil {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "log in with the admin token first")
			return
		}
		cur, err := readTokenHash(s.cfg.StateDir)
		if err != nil {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "no admin token is configured")
			return
		}
		sess := s.sess.get(c.Value, cur)
		if sess == nil {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "session expired; log in again")
			return
		}
		if stateChanging(r.Method) {
			if !sameOrigin(r) {
				writeError(w, http.StatusForbidden, "bad_origin", "cross-origin request refused")
				return
			}
			got := r.Header.Get(CSRFHeader)
			if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
				writeError(w, http.StatusForbidden, "csrf", "missing or wrong "+CSRFHeader+" header")
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, sess)))
	})
}

// authedAnyMethod requires a session but no CSRF token (for 404s).
func (s *Server) authedAnyMethod(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(SessionCookie)
		cur, herr := readTokenHash(s.cfg.StateDir)
		if err != nil || herr != nil || s.sess.get(c.Value, cur) == nil {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "log in with the admin token first")
			return
		}
		h(w, r)
	})
}

func stateChanging(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// sameOrigin accepts a request without Origin (non-browser clients) or
// whose Origin's host is the request's Host. Browsers always send Origin
// on cross-origin POSTs, and Sec-Fetch-Site when they know better.
func sameOrigin(r *http.Request) bool {
	if sfs := r.Header.Get("Sec-Fetch-Site"); sfs == "cross-site" || sfs == "same-site" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

func (s *Server) actor(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "admin@" + host
}

func (s *Server) emitAdmin(r *http.Request, action, decision, reason string, detail map[string]string) {
	s.cfg.Audit.Emit(&audit.Event{
		TS: s.cfg.Now(), Type: audit.TypeAdmin, Action: action, Actor: s.actor(r),
		Decision: decision, Reason: reason, Detail: detail,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// apiError is every error body: code, a sentence, and for policy problems
// the positions.
type apiError struct {
	Error   string        `json:"error"`
	Message string        `json:"message"`
	Field   string        `json:"field,omitempty"`
	Errors  []ConfigError `json:"errors,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: code, Message: msg})
}

// maxBody bounds request bodies: a policy is at most 4 MiB.
const maxBody = 5 << 20

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "bad_request", "send application/json")
		return false
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "bad_request", Field: ute.Field, Message: fmt.Sprintf("field %s: want %s", ute.Field, ute.Type)})
			return false
		}
		writeError(w, http.StatusBadRequest, "bad_request", "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	st := s.cfg.Controller.Status(r.Context())
	ok := true
	for _, c := range st.Components {
		if c.State != StateStopped && !c.Healthy {
			ok = false
		}
	}
	// Only a summary: component details need a session.
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "degraded"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	// A login form on another site must not be able to log the browser
	// into this UI (login CSRF): same-origin only, JSON only.
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "bad_origin", "cross-origin request refused")
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if !s.sess.allowAttempt() {
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many failed logins; wait a minute")
		return
	}
	cur, err := readTokenHash(s.cfg.StateDir)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "no_token", "no admin token is configured; run `cagent admin token --rotate`")
		return
	}
	if body.Token == "" || !equalHash(hashToken(strings.TrimSpace(body.Token)), cur) {
		s.sess.fail()
		s.emitAdmin(r, "login", audit.Deny, "wrong admin token", nil)
		writeError(w, http.StatusUnauthorized, "bad_token", "wrong admin token")
		return
	}
	id, sess := s.sess.create(cur, r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: id, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.cfg.TLS,
	})
	s.emitAdmin(r, "login", audit.Allow, "", nil)
	writeJSON(w, http.StatusOK, map[string]string{"csrf": sess.csrf})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		s.sess.remove(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.cfg.TLS})
	s.emitAdmin(r, "logout", audit.Allow, "", nil)
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	sess := r.Context().Value(ctxKey{}).(*session)
	writeJSON(w, http.StatusOK, map[string]string{"csrf": sess.csrf})
}

// policyStatus is the running policy's state for the dashboard and editor.
type policyStatus struct {
	File        string        `json:"file"`
	Domains     int           `json:"domains"`
	Enforcement string        `json:"enforcement"`
	Error       string        `json:"error,omitempty"`
	Errors      []ConfigError `json:"errors,omitempty"`
}

func (s *Server) policyStatus() policyStatus {
	ps := policyStatus{File: s.cfg.PolicyPath}
	if p := s.cfg.Policy.Current(); p != nil {
		ps.Domains = len(p.Domains)
		ps.Enforcement = p.Enforcement
	}
	if err := s.cfg.Policy.LastError(); err != nil {
		ps.Error = "the file on disk is invalid; the last good policy keeps running"
		ps.Errors = configErrors(err)
	}
	return ps
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := s.cfg.Controller.Status(r.Context())
	writeJSON(w, http.StatusOK, struct {
		Status
		Policy policyStatus `json:"policy"`
		UI     bool         `json:"ui_built"`
	}{st, s.policyStatus(), UIBuilt()})
}

func (s *Server) sandboxAction(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	ctx := r.Context()
	var err error
	detail := map[string]string{}
	switch action {
	case "start":
		err = s.cfg.Controller.Start(ctx)
	case "stop":
		err = s.cfg.Controller.Stop(ctx)
	case "restart":
		err = s.cfg.Controller.Restart(ctx)
	case "wipe":
		var body struct {
			EmptyWorkspace bool `json:"empty_workspace"`
		}
		if !decodeBody(w, r, &body) {
			return
		}
		detail["empty_workspace"] = fmt.Sprint(body.EmptyWorkspace)
		err = s.cfg.Controller.Wipe(ctx, body.EmptyWorkspace)
	default:
		writeError(w, http.StatusNotFound, "not_found", "unknown action "+action+"; use start, stop, restart or wipe")
		return
	}
	if err != nil {
		s.emitAdmin(r, "sandbox_"+action, audit.Deny, err.Error(), detail)
		writeError(w, http.StatusConflict, "action_failed", err.Error())
		return
	}
	s.emitAdmin(r, "sandbox_"+action, audit.Allow, "", detail)
	writeJSON(w, http.StatusOK, s.cfg.Controller.Status(ctx))
}
