package adminui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policywatch"
	"github.com/coder/websocket"
	"github.com/creack/pty"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testController is a small real Controller for the API tests: state
// changes are recorded, and Exec runs a command on a local pty. The
// daemon package tests the real one, whose Exec ends in the sandbox.
type testController struct {
	mu      sync.Mutex
	running bool
	calls   []string
	execErr error
}

func (c *testController) Status(context.Context) Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := StateStopped
	if c.running {
		st = StateRunning
	}
	return Status{Agent: "t", Components: []ComponentStatus{{Name: "sandbox", State: st, Healthy: c.running}}}
}

func (c *testController) record(s string, running bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, s)
	c.running = running
	return nil
}
func (c *testController) Start(context.Context) error   { return c.record("start", true) }
func (c *testController) Stop(context.Context) error    { return c.record("stop", false) }
func (c *testController) Restart(context.Context) error { return c.record("restart", true) }
func (c *testController) Wipe(_ context.Context, empty bool) error {
	if empty {
		return c.record("wipe+empty", true)
	}
	return c.record("wipe", true)
}

type ptyProc struct {
	cmd *exec.Cmd
	f   *os.File
}

func (p *ptyProc) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	if err != nil {
		return n, io.EOF
	}
	return n, nil
}
func (p *ptyProc) Write(b []byte) (int, error) { return p.f.Write(b) }
func (p *ptyProc) Resize(c, r uint16) error {
	return pty.Setsize(p.f, &pty.Winsize{Cols: c, Rows: r})
}
func (p *ptyProc) Wait() (int, error) {
	err := p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode(), err
}
func (p *ptyProc) Close() error {
	_ = p.cmd.Process.Kill()
	return p.f.Close()
}

func (c *testController) Exec(_ context.Context, req ExecRequest) (Process, error) {
	if c.execErr != nil {
		return nil, c.execErr
	}
	cmd := exec.Command("/bin/sh")
	cmd.Env = []string{"PS1=$ ", "PATH=/usr/bin:/bin"}
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: req.Cols, Rows: req.Rows})
	if err != nil {
		return nil, err
	}
	return &ptyProc{cmd: cmd, f: f}, nil
}

type recSink struct {
	mu sync.Mutex
	ev []audit.Event
}

func (r *recSink) Emit(e *audit.Event) {
	r.mu.Lock()
	r.ev = append(r.ev, *e)
	r.mu.Unlock()
}

func (r *recSink) actions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.ev {
		out = append(out, e.Action+":"+e.Decision)
	}
	return out
}

const basePolicy = `# the admin test policy
mode: standalone
dns:
  upstream: [127.0.0.1:5399]
domains:
  - domain: api.example.com  # keep this comment
    alias: api
  - domain: pypi.org
sandbox:
  runtime: runc
`

type env struct {
	t      *testing.T
	srv    *httptest.Server
	s      *Server
	ctl    *testController
	sink   *recSink
	events *EventStore
	token  string
	path   string
	dir    string
	w      *policywatch.Watcher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "cagent.yaml")
	if err := os.WriteFile(path, []byte(basePolicy), 0o640); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := policywatch.Watch(ctx, path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, created, err := EnsureToken(dir)
	if err != nil || !created {
		t.Fatal(err, created)
	}
	e := &env{t: t, ctl: &testController{running: true}, sink: &recSink{}, events: NewEventStore(100, nil), token: tok, path: path, dir: dir, w: w}
	e.s, err = New(Config{StateDir: dir, PolicyPath: path, Policy: w, Controller: e.ctl, Events: e.events,
		Audit: audit.Multi(e.sink, e.events), LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.s)
	t.Cleanup(func() {
		e.srv.CloseClientConnections()
		e.s.Close()
		e.srv.Close()
		cancel()
		w.Close()
	})
	return e
}

// client is a browser-like client: a cookie jar, the CSRF token, and the
// UI's own Origin on every request.
type client struct {
	e    *env
	hc   *http.Client
	csrf string
}

func (e *env) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{e: e, hc: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

func (c *client) do(method, path string, body any, hdr map[string]string) (*http.Response, map[string]any) {
	c.e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.e.srv.URL+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Origin", c.e.srv.URL)
	if c.csrf != "" {
		req.Header.Set(CSRFHeader, c.csrf)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp, m
}

func (c *client) login() *client {
	c.e.t.Helper()
	resp, m := c.do("POST", "/api/login", map[string]string{"token": c.e.token}, nil)
	if resp.StatusCode != 200 {
		c.e.t.Fatalf("login: %d %v", resp.StatusCode, m)
	}
	c.csrf = m["csrf"].(string)
	return c
}

func TestAuthRequiredEverywhereButHealthz(t *testing.T) {
	e := newEnv(t)
	anon := e.client()
	routes := []struct{ method, path string }{
		{"GET", "/api/session"}, {"GET", "/api/status"}, {"POST", "/api/logout"},
		{"POST", "/api/sandbox/start"}, {"POST", "/api/sandbox/stop"}, {"POST", "/api/sandbox/restart"}, {"POST", "/api/sandbox/wipe"},
		{"GET", "/api/config"}, {"POST", "/api/config/validate"}, {"PUT", "/api/config"}, {"PUT", "/api/config/domains"},
		{"POST", "/api/config/allow"}, {"GET", "/api/logs"}, {"GET", "/api/logs/stream"}, {"GET", "/api/analytics"}, {"GET", "/api/terminal"},
		{"GET", "/api/nonexistent"}, {"DELETE", "/api/secrets/x"},
	}
	for _, r := range routes {
		resp, m := anon.do(r.method, r.path, map[string]string{}, nil)
		if resp.StatusCode != http.StatusUnauthorized || m["error"] != "unauthenticated" {
			t.Errorf("%s %s without login: %d %v", r.method, r.path, resp.StatusCode, m)
		}
	}
	// A forged session cookie is no session.
	u, _ := url.Parse(e.srv.URL)
	anon.hc.Jar.SetCookies(u, []*http.Cookie{{Name: SessionCookie, Value: "forged"}})
	if resp, _ := anon.do("GET", "/api/status", nil, nil); resp.StatusCode != 401 {
		t.Errorf("forged cookie: %d", resp.StatusCode)
	}
	resp, m := anon.do("GET", "/healthz", nil, nil)
	if resp.StatusCode != 200 || m["status"] != "ok" {
		t.Errorf("healthz: %d %v", resp.StatusCode, m)
	}
	if len(m) != 1 {
		t.Errorf("healthz leaks details: %v", m)
	}
	if ctl := e.ctl; len(ctl.calls) != 0 {
		t.Errorf("unauthenticated calls reached the controller: %v", ctl.calls)
	}
}

func TestLogin(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	for _, tok := range []string{"", "wrong", e.token + "x", strings.ToUpper(e.token)} {
		resp, m := c.do("POST", "/api/login", map[string]string{"token": tok}, nil)
		if resp.StatusCode != 401 {
			t.Errorf("token %q: %d %v", tok, resp.StatusCode, m)
		}
	}
	resp, m := c.do("POST", "/api/login", map[string]string{"token": e.token}, nil)
	if resp.StatusCode != 200 || m["csrf"] == "" {
		t.Fatalf("login: %d %v", resp.StatusCode, m)
	}
	var sc *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/" {
		t.Fatalf("session cookie %+v", sc)
	}
	// Cross-origin login (login CSRF) and form posts are refused.
	c2 := e.client()
	if resp, _ := c2.do("POST", "/api/login", map[string]string{"token": e.token}, map[string]string{"Origin": "http://evil.example"}); resp.StatusCode != 403 {
		t.Errorf("cross-origin login: %d", resp.StatusCode)
	}
	if resp, _ := c2.do("POST", "/api/login", map[string]string{"token": e.token}, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); resp.StatusCode != 415 {
		t.Errorf("form login: %d", resp.StatusCode)
	}
	// The token's hash is stored, never the token.
	b, _ := os.ReadFile(TokenPath(e.dir))
	if bytes.Contains(b, []byte(e.token)) || strings.TrimSpace(string(b)) != hashToken(e.token) {
		t.Errorf("token file %q", b)
	}
	if st, _ := os.Stat(TokenPath(e.dir)); st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v", st.Mode())
	}
	got := strings.Join(e.sink.actions(), " ")
	if !strings.Contains(got, "login:deny") || !strings.Contains(got, "login:allow") {
		t.Errorf("audit %s", got)
	}
}

func TestLoginThrottled(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	for range 10 {
		c.do("POST", "/api/login", map[string]string{"token": "guess"}, nil)
	}
	resp, _ := c.do("POST", "/api/login", map[string]string{"token": e.token}, nil)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after 10 failures: %d", resp.StatusCode)
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	cases := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no token", map[string]string{CSRFHeader: ""}, 403},
		{"wrong token", map[string]string{CSRFHeader: "x" + c.csrf}, 403},
		{"cross origin", map[string]string{"Origin": "http://evil.example"}, 403},
		{"cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"null origin", map[string]string{"Origin": "null"}, 403},
		{"ok", nil, 200},
	}
	for _, tc := range cases {
		resp, m := c.do("POST", "/api/sandbox/stop", nil, tc.hdr)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %v", tc.name, resp.StatusCode, m)
		}
	}
	if got := strings.Join(e.ctl.calls, ","); got != "stop" {
		t.Errorf("controller calls %q, want only the one allowed", got)
	}
	// Reads need no CSRF token.
	if resp, _ := c.do("GET", "/api/status", nil, map[string]string{CSRFHeader: ""}); resp.StatusCode != 200 {
		t.Errorf("GET status: %d", resp.StatusCode)
	}
}

func TestHostHeaderChecked(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	for host, want := range map[string]int{"evil.example:80": 421, "localhost": 200, "127.0.0.1": 200, "[::1]:8081": 200, "127.0.0.1.nip.io": 421} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/healthz", nil)
		req.Host = host
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func TestSandboxActions(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	for _, a := range []string{"stop", "start", "restart"} {
		if resp, m := c.do("POST", "/api/sandbox/"+a, nil, nil); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", a, resp.StatusCode, m)
		}
	}
	if resp, _ := c.do("POST", "/api/sandbox/wipe", map[string]bool{"empty_workspace": true}, nil); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	if resp, m := c.do("POST", "/api/sandbox/wipe", map[string]any{"empty_workspace": "yes"}, nil); resp.StatusCode != 400 || m["field"] != "empty_workspace" {
		t.Errorf("bad wipe body: %d %v", resp.StatusCode, m)
	}
	if resp, _ := c.do("POST", "/api/sandbox/explode", nil, nil); resp.StatusCode != 404 {
		t.Errorf("unknown action: %d", resp.StatusCode)
	}
	if resp, m := c.do("GET", "/api/nonexistent", nil, nil); resp.StatusCode != 404 || m["error"] != "not_found" {
		t.Errorf("unknown path with a session: %d %v", resp.StatusCode, m)
	}
	if got := strings.Join(e.ctl.calls, ","); got != "stop,start,restart,wipe+empty" {
		t.Errorf("calls %s", got)
	}
}

func TestConfigValidationPositions(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	bad := "domains:\n  - domain: ok.example\n    timeout: forever\n  - domain: x\n    bogus: 1\n"
	resp, m := c.do("POST", "/api/config/validate", map[string]string{"yaml": bad}, nil)
	if resp.StatusCode != 200 || m["valid"] != false {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	errs := m["errors"].([]any)
	var lines []string
	for _, x := range errs {
		er := x.(map[string]any)
		if er["line"] == nil || er["col"] == nil {
			t.Errorf("error without position: %v", er)
			continue
		}
		lines = append(lines, er["path"].(string))
		_ = er
	}
	first := errs[0].(map[string]any)
	if first["line"].(float64) != 3 || first["path"] != "domains[0].timeout" {
		t.Errorf("first error %v", first)
	}
	if !strings.Contains(strings.Join(lines, " "), "domains[1].bogus") {
		t.Errorf("unknown key not reported: %v", errs)
	}
	// YAML syntax errors also carry a line.
	_, m = c.do("POST", "/api/config/validate", map[string]string{"yaml": "domains: [\n"}, nil)
	if er := m["errors"].([]any)[0].(map[string]any); er["line"] == nil {
		t.Errorf("syntax error without line: %v", er)
	}
	_, m = c.do("POST", "/api/config/validate", map[string]string{"yaml": basePolicy}, nil)
	if m["valid"] != true {
		t.Errorf("valid policy: %v", m)
	}
}

func TestConfigSaveAtomic(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	orig, _ := os.ReadFile(e.path)

	// Invalid: 400 with positions, file untouched, running policy kept.
	resp, m := c.do("PUT", "/api/config", map[string]string{"yaml": "enforcement: maybe\n"}, nil)
	if resp.StatusCode != 400 || m["error"] != "invalid_policy" || len(m["errors"].([]any)) == 0 {
		t.Fatalf("invalid save: %d %v", resp.StatusCode, m)
	}
	if now, _ := os.ReadFile(e.path); !bytes.Equal(now, orig) {
		t.Fatal("invalid policy was written")
	}

	// Valid: written whole, mode kept, applied before the response.
	next := strings.Replace(basePolicy, "pypi.org", "files.pythonhosted.org", 1)
	resp, m = c.do("PUT", "/api/config", map[string]string{"yaml": next}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("save: %d %v", resp.StatusCode, m)
	}
	if now, _ := os.ReadFile(e.path); string(now) != next {
		t.Fatalf("file %q", now)
	}
	if st, _ := os.Stat(e.path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", st.Mode())
	}
	if e.w.Current().Lookup("files.pythonhosted.org") == nil {
		t.Error("saved policy not applied")
	}
	ents, _ := os.ReadDir(e.dir)
	for _, en := range ents {
		if strings.Contains(en.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", en.Name())
		}
	}
	// A symlinked policy stays a symlink.
	real := filepath.Join(e.dir, "real.yaml")
	os.Rename(e.path, real)
	os.Symlink(real, e.path)
	if resp, m := c.do("PUT", "/api/config", map[string]string{"yaml": basePolicy}, nil); resp.StatusCode != 200 {
		t.Fatalf("save via symlink: %d %v", resp.StatusCode, m)
	}
	if fi, _ := os.Lstat(e.path); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("symlink replaced by a file")
	}
	if b, _ := os.ReadFile(real); string(b) != basePolicy {
		t.Error("target not updated")
	}
}

func TestDomainsEditor(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	_, m := c.do("GET", "/api/config", nil, nil)
	ds := m["domains"].([]any)
	if len(ds) != 2 || ds[0].(map[string]any)["alias"] != "api" {
		t.Fatalf("domains %v", ds)
	}
	// Invalid entry: errors name the entry's field.
	body := map[string]any{"domains": []map[string]any{{"domain": "api.example.com"}, {"domain": "x.example", "timeout": "soon"}}}
	resp, m := c.do("PUT", "/api/config/domains", body, nil)
	if resp.StatusCode != 400 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	er := m["errors"].([]any)[0].(map[string]any)
	if er["path"] != "domains[1].timeout" {
		t.Errorf("error %v", er)
	}
	// Valid: every field round-trips, comments elsewhere survive.
	rpm := map[string]any{"requests_per_minute": 30, "burst_size": 5}
	body = map[string]any{"domains": []map[string]any{
		{"domain": "api.example.com", "alias": "api", "read_only": true, "allowed_paths": []string{"/v1/*", " "}, "denied_paths": []string{"/v1/admin*"},
			"rate_limit": rpm, "egress_limit": "10MiB", "timeout": "120s", "tls_intercept": true, "ports": []int{443},
			"credential": map[string]string{"header": "Authorization", "format": "Bearer {value}", "secret": "API_KEY"}},
		{"domain": "*.github.com", "enabled": false},
	}}
	resp, m = c.do("PUT", "/api/config/domains", body, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	b, _ := os.ReadFile(e.path)
	s := string(b)
	for _, want := range []string{"# the admin test policy", "secret: API_KEY", "egress_limit: 10MiB", "allowed_paths: [/v1/*]", "enabled: false", "127.0.0.1:5399"} {
		if !strings.Contains(s, want) {
			t.Errorf("saved file lacks %q:\n%s", want, s)
		}
	}
	d := e.w.Current().Lookup("api.example.com")
	if d == nil || !d.ReadOnly || d.Credential == nil || d.Credential.Secret != "API_KEY" || d.RateLimit.RequestsPerMinute != 30 {
		t.Errorf("applied entry %+v", d)
	}
	if e.w.Current().Lookup("x.github.com") != nil {
		t.Error("disabled entry applied")
	}
	// Unknown fields in the body are a 400 naming the problem.
	if resp, _ := c.do("PUT", "/api/config/domains", map[string]any{"domains": []map[string]any{{"domain": "a.example", "password": "x"}}}, nil); resp.StatusCode != 400 {
		t.Errorf("unknown field: %d", resp.StatusCode)
	}
}

func TestAllowDomain(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	if resp, m := c.do("POST", "/api/config/allow", map[string]string{"domain": "New.Example.org."}, nil); resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	if e.w.Current().Lookup("new.example.org") == nil {
		t.Fatal("not applied")
	}
	if resp, _ := c.do("POST", "/api/config/allow", map[string]string{"domain": "new.example.org"}, nil); resp.StatusCode != 409 {
		t.Errorf("duplicate: %d", resp.StatusCode)
	}
	for _, bad := range []string{"", "not a host", "a..b", "http://x.example/"} {
		if resp, _ := c.do("POST", "/api/config/allow", map[string]string{"domain": bad}, nil); resp.StatusCode != 400 {
			t.Errorf("%q: %d", bad, resp.StatusCode)
		}
	}
	if !strings.Contains(strings.Join(e.sink.actions(), " "), "domain_allow:allow") {
		t.Error("no audit event")
	}
}

func TestInvalidFileOnDiskShown(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	os.WriteFile(e.path, []byte("domains:\n  - domain: \"\"\n"), 0o640)
	_ = e.w.Reload()
	_, m := c.do("GET", "/api/status", nil, nil)
	pol := m["policy"].(map[string]any)
	if pol["error"] == nil || len(pol["errors"].([]any)) == 0 {
		t.Fatalf("policy status %v", pol)
	}
	if pol["domains"].(float64) != 2 {
		t.Errorf("running policy not kept: %v", pol)
	}
}

func TestRotateTokenEndsSessions(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	if _, err := RotateToken(e.dir); err != nil {
		t.Fatal(err)
	}
	if resp, _ := c.do("GET", "/api/status", nil, nil); resp.StatusCode != 401 {
		t.Errorf("old session after rotate: %d", resp.StatusCode)
	}
	if resp, _ := c.do("POST", "/api/login", map[string]string{"token": e.token}, nil); resp.StatusCode != 401 {
		t.Errorf("old token after rotate: %d", resp.StatusCode)
	}
}

func TestLogoutEndsSession(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	if resp, _ := c.do("POST", "/api/logout", nil, nil); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	if resp, _ := c.do("GET", "/api/status", nil, nil); resp.StatusCode != 401 {
		t.Errorf("after logout: %d", resp.StatusCode)
	}
}

func TestLogsAndLiveTail(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	now := time.Now()
	e.events.Emit(&audit.Event{TS: now.Add(-2 * time.Hour), Type: "http", Host: "old.example", Decision: "allow"})
	e.events.Emit(&audit.Event{TS: now, Type: "http", Host: "api.example.com", Decision: "allow", Path: "/v1/x"})
	e.events.Emit(&audit.Event{TS: now, Type: "dns", QName: "evil.example.", Decision: "deny", Error: "destination_not_allowed"})
	for q, want := range map[string]int{"?type=http,dns": 3, "?type=http,dns&since=1h": 2, "?decision=deny": 1, "?type=http&domain=API": 1, "?q=/v1": 1, "?type=sandbox": 0, "?type=admin&decision=allow": 1} {
		_, m := c.do("GET", "/api/logs"+q, nil, nil)
		if n := len(m["events"].([]any)); n != want {
			t.Errorf("logs%s: %d events, want %d", q, n, want)
		}
	}
	if resp, _ := c.do("GET", "/api/logs?since=yesterday", nil, nil); resp.StatusCode != 400 {
		t.Errorf("bad since: %d", resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/logs/stream?decision=deny", nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %s", ct)
	}
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var acc string
		for {
			n, err := resp.Body.Read(buf)
			acc += string(buf[:n])
			if i := strings.Index(acc, "data: "); i >= 0 && strings.Contains(acc[i:], "\n\n") {
				got <- acc[i:]
				return
			}
			if err != nil {
				got <- acc
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	e.events.Emit(&audit.Event{Type: "http", Host: "allowed.example", Decision: "allow"})
	e.events.Emit(&audit.Event{Type: "http", Host: "blocked.example", Decision: "deny"})
	select {
	case s := <-got:
		if !strings.Contains(s, "blocked.example") || strings.Contains(s, "allowed.example") {
			t.Errorf("stream %q", s)
		}
	case <-ctx.Done():
		t.Fatal("no live event")
	}
	cancel()
}

func dialTerminal(t *testing.T, e *env, c *client, origin string) (*websocket.Conn, *http.Response, error) {
	u := strings.Replace(e.srv.URL, "http://", "ws://", 1) + "/api/terminal?cols=80&rows=24&csrf=" + url.QueryEscape(c.csrf)
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.hc, HTTPHeader: h})
}

func TestTerminalOrigin(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	for _, o := range []string{"http://evil.example", "", "null", strings.Replace(e.srv.URL, "127.0.0.1", "localhost", 1)} {
		conn, resp, err := dialTerminal(t, e, c, o)
		if err == nil {
			conn.CloseNow()
			t.Errorf("origin %q accepted", o)
			continue
		}
		if resp == nil || resp.StatusCode != 403 {
			t.Errorf("origin %q: %v", o, err)
		}
	}
	// The CSRF parameter is required too.
	c2 := *c
	c2.csrf = "wrong"
	if _, resp, err := dialTerminal(t, e, &c2, e.srv.URL); err == nil || resp.StatusCode != 403 {
		t.Errorf("wrong csrf: %v", err)
	}
}

func TestTerminalSession(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	conn, _, err := dialTerminal(t, e, c, e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resize, _ := json.Marshal(termControl{Type: "resize", Cols: 101, Rows: 33})
	if err := conn.Write(ctx, websocket.MessageText, resize); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("echo X$((6*7))Y; stty size; exit 7\n")); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var exit map[string]any
	for exit == nil {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (so far %q)", err, out.String())
		}
		if typ == websocket.MessageText {
			json.Unmarshal(b, &exit)
		} else {
			out.Write(b)
		}
	}
	if !strings.Contains(out.String(), "X42Y") || !strings.Contains(out.String(), "33 101") {
		t.Errorf("output %q", out.String())
	}
	if exit["type"] != "exit" || exit["code"].(float64) != 7 {
		t.Errorf("exit %v", exit)
	}
}

func TestTerminalExecError(t *testing.T) {
	e := newEnv(t)
	e.ctl.execErr = errors.New("the sandbox is not running")
	c := e.client().login()
	conn, _, err := dialTerminal(t, e, c, e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := conn.Read(ctx)
	if err != nil || !strings.Contains(string(b), "not running") {
		t.Errorf("%s %v", b, err)
	}
}

func TestUIServed(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if UIBuilt() {
		if resp.StatusCode != 200 || !strings.Contains(string(body), "<div id=\"app\">") {
			t.Errorf("index: %d %s", resp.StatusCode, body)
		}
	} else if resp.StatusCode != 503 || !strings.Contains(string(body), "not built") {
		t.Errorf("unbuilt UI: %d %s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if resp, _ := http.Get(e.srv.URL + "/.keep"); resp.StatusCode == 200 {
		b, _ := io.ReadAll(resp.Body)
		if len(b) == 0 {
			t.Error("dot file served")
		}
	}
}

func TestStreamsBounded(t *testing.T) {
	e := newEnv(t)
	c := e.client().login()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var open []*http.Response
	defer func() {
		cancel()
		for _, r := range open {
			r.Body.Close()
		}
	}()
	for range MaxStreams {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/logs/stream", nil)
		resp, err := c.hc.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream: %v %v", resp, err)
		}
		open = append(open, resp)
	}
	if resp, m := c.do("GET", "/api/logs/stream", nil, nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("stream %d: %d %v", MaxStreams+1, resp.StatusCode, m)
	}
	if _, resp, err := dialTerminal(t, e, c, e.srv.URL); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("terminal past the limit: %v", err)
	}
	open[0].Body.Close()
	open = open[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, _, err := dialTerminal(t, e, c, e.srv.URL)
		if err == nil {
			conn.CloseNow()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
