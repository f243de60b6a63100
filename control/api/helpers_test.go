package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/control/api"
	"github.com/cagent-dev/cagent/control/keys"
	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/control/store/storetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t       testing.TB
	st      *store.SQL
	srv     *api.Server
	hs      *httptest.Server
	clock   *clock
	kr      *keys.Keyring
	hasher  *keys.Hasher
	super   string
	mu      sync.Mutex
	notices []string
}

type option func(*api.Config)

func newEnv(t testing.TB, dsn string, opts ...option) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}}
	st, err := store.Open(context.Background(), dsn, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	key := bytes.Repeat([]byte{7}, 32)
	e.hasher, _ = keys.NewHasher(key)
	e.kr, _ = keys.NewKeyring()
	cfg := api.Config{Store: st, Hasher: e.hasher, Keyring: e.kr, Now: e.clock.Now, Rate: 1e6, Burst: 1e6, AuthFailLimit: 1e6,
		Notify: func(tenant, agent string) {
			e.mu.Lock()
			e.notices = append(e.notices, tenant+"/"+agent)
			e.mu.Unlock()
		}}
	for _, o := range opts {
		o(&cfg)
	}
	e.srv, err = api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.srv.Close)
	e.hs = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.hs.Close)
	tok, _ := e.hasher.NewToken()
	if err := st.CreateToken(context.Background(), store.Token{ID: tok.ID, Kind: store.KindSuperadmin, Name: "root", Salt: tok.Salt, Hash: tok.Hash, CreatedAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	e.super = tok.Plain
	return e
}

func trusted(prefixes ...string) option {
	return func(c *api.Config) {
		for _, p := range prefixes {
			c.TrustedProxies = append(c.TrustedProxies, netip.MustParsePrefix(p))
		}
	}
}

type resp struct {
	status int
	body   []byte
	header http.Header
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

func (r resp) items(t testing.TB) []map[string]any {
	t.Helper()
	var l struct{ Items []map[string]any }
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return l.Items
}

// do sends a request; body is marshalled unless it is a string.
func (e *env) do(method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, e.hs.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, body: b, header: res.Header}
}

func (e *env) must(want int, r resp) resp {
	e.t.Helper()
	if r.status != want {
		e.t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

// tenantFx is one tenant with a token of each kind and one agent.
type tenantFx struct {
	id, name          string
	admin, dev, agent string
	agentID           string
	adminID           string
}

func (e *env) tenant(name string) *tenantFx {
	e.t.Helper()
	f := &tenantFx{name: name}
	f.id = e.must(201, e.do("POST", "/api/v1/tenants", e.super, map[string]any{"name": name})).json(e.t)["id"].(string)
	tp := "/api/v1/tenants/" + f.id
	m := e.must(201, e.do("POST", tp+"/tokens", e.super, map[string]any{"kind": "admin", "name": "adm"})).json(e.t)
	f.admin, f.adminID = m["token"].(string), m["id"].(string)
	f.dev = e.must(201, e.do("POST", tp+"/tokens", e.super, map[string]any{"kind": "dev", "name": "dev"})).json(e.t)["token"].(string)
	a := e.must(201, e.do("POST", tp+"/agents", f.admin, map[string]any{"name": "agent-1"})).json(e.t)
	f.agentID = a["id"].(string)
	f.agent = a["token"].(map[string]any)["token"].(string)
	return f
}

func (f *tenantFx) path(p string) string { return "/api/v1/tenants/" + f.id + p }

func (f *tenantFx) token(kind string) string {
	switch kind {
	case store.KindAdmin:
		return f.admin
	case store.KindDev:
		return f.dev
	case store.KindAgent:
		return f.agent
	}
	return ""
}

func each(t *testing.T, fn func(t *testing.T, dsn string)) {
	storetest.Each(t, fn)
}
