package api_test

// Tests written during the adversarial review of the control plane
// (docs/control-plane.md, "Security review"): each failed before its fix.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control/api"
	"github.com/cagent-dev/cagent/control/store"
	"github.com/coder/websocket"
)

// TestHostCredentialSourcesRefused: a credential taking its value from an
// environment variable or a file names something on the data plane's host
// (its agent token file, /etc/shadow, CAGENT_TOKEN). A control-plane
// tenant admin must not be able to make its data planes read those and
// send them to a domain of its choosing: only secret: is accepted, on
// write and, for rows stored before, when the effective policy is built.
func TestHostCredentialSourcesRefused(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		ok := e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "ok.example",
			"credential": map[string]any{"header": "X-Key", "secret": "k"}}})).json(t)
		for _, c := range []struct{ src, value, field string }{
			{"env", "CAGENT_TOKEN", "entry.credential.env"},
			{"file", "/var/lib/cagent/connected/token", "entry.credential.file"},
		} {
			entry := map[string]any{"domain": "exfil.example", "credential": map[string]any{"header": "X-Key", c.src: c.value}}
			for _, req := range []struct{ method, path string }{
				{"POST", a.path("/policies")},
				{"PUT", a.path("/policies/" + ok["id"].(string))},
			} {
				body := map[string]any{"entry": entry}
				if req.method == "PUT" {
					entry["domain"] = "ok.example"
				}
				r := e.do(req.method, req.path, a.admin, body)
				if r.status != 400 || r.json(t)["field"] != c.field {
					t.Errorf("%s %s with credential.%s: %d %s", req.method, req.path, c.src, r.status, r.body)
				}
				r = e.do(req.method, req.path, e.super, body)
				if r.status != 400 {
					t.Errorf("superadmin %s with credential.%s: %d %s", req.method, c.src, r.status, r.body)
				}
			}
		}
		// A row written before the check (or by hand) never reaches an agent.
		now := e.clock.Now()
		for i, src := range []string{`"env":"CAGENT_TOKEN"`, `"file":"/etc/shadow"`} {
			entry := `{"domain":"old` + string(rune('0'+i)) + `.example","credential":{"header":"X-Key",` + src + `}}`
			if err := e.st.CreatePolicy(context.Background(), store.Policy{ID: "old" + string(rune('0'+i)), TenantID: a.id, Domain: "old" + string(rune('0'+i)) + ".example",
				Entry: json.RawMessage(entry), Enabled: true, CreatedAt: now, UpdatedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		for _, path := range []string{"/api/v1/agent/policy", "/api/v1/agent/policy?format=json"} {
			r := e.must(200, e.do("GET", path, a.agent, nil))
			if strings.Contains(string(r.body), "old") || strings.Contains(string(r.body), "CAGENT_TOKEN") || !strings.Contains(string(r.body), "ok.example") {
				t.Fatalf("%s: %s", path, r.body)
			}
		}
		st, err := e.srv.AgentState(context.Background(), a.id, a.agentID)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(st.PolicyYAML, "shadow") || strings.Contains(st.PolicyYAML, "CAGENT_TOKEN") {
			t.Fatalf("stream state carries a host credential source:\n%s", st.PolicyYAML)
		}
	})
}

// TestDeletedTenantTokensRefused: deleting a tenant disables the tokens
// and agents it has at that moment, but a token or agent created by a
// request that passed authorization just before the deletion committed
// (no foreign key stops it) would be created enabled. Authentication must
// itself refuse every token of a deleted tenant.
func TestDeletedTenantTokensRefused(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "a.example"}}))
		e.must(204, e.do("DELETE", "/api/v1/tenants/"+a.id, e.super, nil))
		// What the racing requests would have written after the deletion.
		ctx, now := context.Background(), e.clock.Now()
		if err := e.st.CreateAgent(ctx, store.Agent{ID: "late-agent", TenantID: a.id, Name: "late", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		toks := map[string]string{}
		for _, k := range []struct{ kind, agent string }{{store.KindAdmin, ""}, {store.KindDev, ""}, {store.KindAgent, "late-agent"}} {
			tok, _ := e.hasher.NewToken()
			if err := e.st.CreateToken(ctx, store.Token{ID: tok.ID, TenantID: a.id, Kind: k.kind, AgentID: k.agent, Name: "late", Salt: tok.Salt, Hash: tok.Hash, CreatedAt: now}); err != nil {
				t.Fatal(err)
			}
			toks[k.kind] = tok.Plain
		}
		for kind, tok := range toks {
			if r := e.do("GET", "/api/v1/whoami", tok, nil); r.status != 401 {
				t.Errorf("%s token of a deleted tenant: whoami %d %s", kind, r.status, r.body)
			}
		}
		if r := e.do("GET", "/api/v1/agent/policy", toks[store.KindAgent], nil); r.status != 401 {
			t.Errorf("agent of a deleted tenant reads its policy: %d %s", r.status, r.body)
		}
		// Superadmin tokens have no tenant and are unaffected.
		e.must(200, e.do("GET", "/api/v1/whoami", e.super, nil))
	})
}

func failLimit(n int, window time.Duration) option {
	return func(c *api.Config) { c.AuthFailLimit, c.AuthFailWindow = n, window }
}

// TestFailedAuthThrottledPerAddress: failed token attempts are counted per
// source address (IPv4 address, IPv6 /64) in a fixed window; past the
// limit every attempt from there is refused with 429 before the token is
// looked at, so the answer no longer depends on the token. Other
// addresses, and requests carrying no token at all, are not affected.
func TestFailedAuthThrottledPerAddress(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, trusted("127.0.0.1/32"), failLimit(5, time.Minute))
		a := e.tenant("alpha")
		bad := a.admin[:len(a.admin)-2] + "xx"
		from := func(addr string) []string { return []string{"X-Forwarded-For", addr} }
		for i := 0; i < 5; i++ {
			e.must(401, e.do("GET", "/api/v1/whoami", bad, nil, from("198.51.100.1")...))
		}
		for _, tok := range []string{bad, a.admin, e.super} {
			r := e.must(429, e.do("GET", "/api/v1/whoami", tok, nil, from("198.51.100.1")...))
			ra, err := strconv.Atoi(r.header.Get("Retry-After"))
			if r.json(t)["error"] != "rate_limited" || err != nil || ra < 1 || ra > 60 {
				t.Fatalf("throttled answer: %v %s", r.header, r.body)
			}
		}
		// Every authenticated route shares the count.
		e.must(429, e.do("GET", a.path("/agents"), a.admin, nil, from("198.51.100.1")...))
		// Another address is unaffected, and so are requests without a token.
		e.must(200, e.do("GET", "/api/v1/whoami", a.admin, nil, from("198.51.100.2")...))
		for i := 0; i < 10; i++ {
			e.must(401, e.do("GET", "/api/v1/whoami", "", nil, from("198.51.100.3")...))
		}
		e.must(200, e.do("GET", "/api/v1/whoami", a.dev, nil, from("198.51.100.3")...))
		// IPv6 counts per /64: the neighbour in the /64 is throttled, the
		// next /64 is not.
		for i := 0; i < 5; i++ {
			e.must(401, e.do("GET", "/api/v1/whoami", bad, nil, from("2001:db8:1:2::1")...))
		}
		e.must(429, e.do("GET", "/api/v1/whoami", a.admin, nil, from("2001:db8:1:2:ffff::9")...))
		e.must(200, e.do("GET", "/api/v1/whoami", a.admin, nil, from("2001:db8:1:3::1")...))
		// Public routes stay reachable.
		e.must(200, e.do("GET", "/api/v1/healthz", "", nil, from("198.51.100.1")...))
		// The window passes: the address may try again.
		e.clock.Add(time.Minute)
		e.must(200, e.do("GET", "/api/v1/whoami", a.admin, nil, from("198.51.100.1")...))
	})
}

// TestFailedAuthThrottlesTheStream: the agent stream counts and honours
// failed attempts like the REST routes (here every client is 127.0.0.1).
func TestFailedAuthThrottlesTheStream(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		hub := api.NewHub()
		e := newEnv(t, dsn, failLimit(3, time.Minute), func(c *api.Config) { c.Notify = hub.Notify })
		hs := httptest.NewServer(e.srv.StreamHandler(hub, api.StreamOptions{}))
		t.Cleanup(func() { hub.Close(); hs.Close() })
		s := &streamEnv{env: e, hub: hub, url: hs.URL + wire.Path}
		a := e.tenant("alpha")
		bad := a.agent[:len(a.agent)-2] + "xx"
		for i := 0; i < 3; i++ {
			if _, code := s.dial(bad); code != http.StatusUnauthorized {
				t.Fatalf("bad token: %d", code)
			}
		}
		if _, code := s.dial(a.agent); code != http.StatusTooManyRequests {
			t.Fatalf("good token from a throttled address: %d", code)
		}
		e.must(429, e.do("GET", "/api/v1/agent/policy", a.agent, nil))
		e.clock.Add(time.Minute)
		c, code := s.dial(a.agent)
		if code != http.StatusSwitchingProtocols {
			t.Fatalf("after the window: %d", code)
		}
		if m := readType(t, c, wire.TypeState); m.Type != wire.TypeState {
			t.Fatalf("first message %+v", m)
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
}

// TestStreamsPerAgentBounded: one agent token could open any number of
// streams (each one a goroutine, a connection and a state recomputation
// every resync), a load every tenant shares. A data plane needs one, two
// while a dead connection is not yet noticed: past StreamOptions.
// MaxPerAgent the oldest stream of that agent is closed, so a reconnecting
// data plane is never refused. Other agents' streams are not touched.
func TestStreamsPerAgentBounded(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		hub := api.NewHub()
		e := newEnv(t, dsn, func(c *api.Config) { c.Notify = hub.Notify })
		hs := httptest.NewServer(e.srv.StreamHandler(hub, api.StreamOptions{MaxPerAgent: 2}))
		t.Cleanup(func() { hub.Close(); hs.Close() })
		s := &streamEnv{env: e, hub: hub, url: hs.URL + wire.Path}
		a, b := e.tenant("alpha"), e.tenant("beta")
		other, _ := s.dial(b.agent)
		readType(t, other, wire.TypeState)
		var conns []*websocket.Conn
		for i := 0; i < 5; i++ {
			c, code := s.dial(a.agent)
			if code != http.StatusSwitchingProtocols {
				t.Fatalf("stream %d: %d", i, code)
			}
			readType(t, c, wire.TypeState)
			conns = append(conns, c)
		}
		// The three oldest were closed, with a reason.
		for i, c := range conns[:3] {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _, err := c.Read(ctx)
			cancel()
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "newer") {
				t.Fatalf("stream %d: %v", i, err)
			}
		}
		waitUntil(t, func() bool { return hub.Count() == 3 })
		// The two newest and the other agent's stream still work.
		for _, c := range append(conns[3:], other) {
			write(t, c, wire.Msg{Type: wire.TypeHeartbeat, Status: "running"})
			readType(t, c, wire.TypeHeartbeatAck)
		}
	})
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamMessagesShareTheTokenRateLimit: REST calls of an agent token
// are rate limited, but messages on its stream (each a database write:
// heartbeats, command results, log batches) were not, so one agent could
// occupy the database every tenant shares. Each message now takes from
// the token's bucket; past it the stream is read more slowly
// (backpressure), so an honest data plane catching up loses nothing.
func TestStreamMessagesShareTheTokenRateLimit(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		hub := api.NewHub()
		e := newEnv(t, dsn, func(c *api.Config) { c.Notify, c.Rate, c.Burst = hub.Notify, 20, 1 })
		hs := httptest.NewServer(e.srv.StreamHandler(hub, api.StreamOptions{}))
		t.Cleanup(func() { hub.Close(); hs.Close() })
		s := &streamEnv{env: e, hub: hub, url: hs.URL + wire.Path}
		// Set up through the store: the REST calls would hit the limit.
		ctx, now := context.Background(), e.clock.Now()
		tok, _ := e.hasher.NewToken()
		for _, err := range []error{
			e.st.CreateTenant(ctx, store.Tenant{ID: "ta", Name: "alpha", CreatedAt: now}),
			e.st.CreateAgent(ctx, store.Agent{ID: "ag", TenantID: "ta", Name: "a", CreatedAt: now}),
			e.st.CreateToken(ctx, store.Token{ID: tok.ID, TenantID: "ta", Kind: store.KindAgent, AgentID: "ag", Salt: tok.Salt, Hash: tok.Hash, CreatedAt: now}),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		c, _ := s.dial(tok.Plain)
		readType(t, c, wire.TypeState)
		// The test clock stands still, so the bucket never refills: message
		// n waits n/20 s, 1.8 s for eight (a few ms without the limit).
		start := time.Now()
		for i := 0; i < 8; i++ {
			write(t, c, wire.Msg{Type: wire.TypeHeartbeat, Status: "running"})
		}
		for i := 0; i < 8; i++ {
			readType(t, c, wire.TypeHeartbeatAck)
		}
		if d := time.Since(start); d < time.Second {
			t.Fatalf("8 messages over a 20/s, burst 1 limit answered in %v", d)
		}
	})
}

// TestForwardedForFailsClosed: behind a trusted proxy, the client is the
// right-most X-Forwarded-For entry outside the trusted proxies. An entry
// that did not parse as a bare address (some proxies append "ip:port")
// used to make the proxy itself the client, so a tenant whose IP ACL
// allows the proxy's network let every client in. Entries with a port
// are now read as their address, and anything else unparseable makes the
// client unknown, which no ACL allows.
func TestForwardedForFailsClosed(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, trusted("127.0.0.1/32"))
		a := e.tenant("alpha")
		e.must(201, e.do("POST", a.path("/ip-acls"), a.admin, map[string]any{"cidr": "127.0.0.0/8"}))
		e.must(201, e.do("POST", a.path("/ip-acls"), a.admin, map[string]any{"cidr": "192.0.2.0/24"}))
		for _, c := range []struct {
			xff  string
			want int
		}{
			{"203.0.113.9:5555", 403},
			{"[2001:db8::9]:5555", 403},
			{"garbage", 403},
			{"unknown", 403},
			{"192.0.2.7, garbage", 403},
			{"203.0.113.9, 127.0.0.1", 403}, // a trusted hop in the chain is skipped
			{"192.0.2.7:443", 200},
			{"192.0.2.7", 200},
			{"", 200}, // no header: the peer (the proxy) is the client
		} {
			var hdr []string
			if c.xff != "" {
				hdr = []string{"X-Forwarded-For", c.xff}
			}
			if r := e.do("GET", a.path("/agents"), a.dev, nil, hdr...); r.status != c.want {
				t.Errorf("X-Forwarded-For %q: %d, want %d: %s", c.xff, r.status, c.want, r.body)
			}
		}
	})
}

// TestTimesOutsideTheStoredRange: times are stored as Unix nanoseconds,
// which hold 1678 to 2262. An expiry past that wrapped around: one chosen
// to wrap to 0 was stored as "never expires" (the response still showed
// the date), others as some date in the past or future. Such times are
// now refused where a client sends them.
func TestTimesOutsideTheStoredRange(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		wraps := time.Unix(18446744073, 709551616).UTC().Format(time.RFC3339Nano) // 2^64 ns
		for _, exp := range []string{wraps, "2300-01-01T00:00:00Z", "9999-12-31T23:59:59Z"} {
			r := e.do("POST", a.path("/tokens"), a.admin, map[string]any{"kind": "dev", "name": "x", "expires_at": exp})
			if r.status != 400 || r.json(t)["field"] != "expires_at" {
				t.Errorf("create with expires_at %s: %d %s", exp, r.status, r.body)
			}
			r = e.do("PATCH", a.path("/tokens/"+a.adminID), a.admin, map[string]any{"expires_at": exp})
			if r.status != 400 || r.json(t)["field"] != "expires_at" {
				t.Errorf("update with expires_at %s: %d %s", exp, r.status, r.body)
			}
			for _, q := range []string{"since", "until"} {
				if r := e.do("GET", a.path("/audit?"+q+"="+exp), a.admin, nil); r.status != 400 {
					t.Errorf("audit %s=%s: %d %s", q, exp, r.status, r.body)
				}
			}
		}
		e.must(400, e.do("GET", a.path("/logs?since=1500-01-01T00:00:00Z"), a.admin, nil))
		// An agent's log entry with such a time is filed at its arrival.
		e.must(202, e.do("POST", "/api/v1/agent/logs", a.agent, map[string]any{"entries": []any{
			map[string]any{"ts": "0001-01-01T00:00:01Z", "type": "old"}, map[string]any{"ts": wraps, "type": "wrap"}}}))
		for _, l := range e.must(200, e.do("GET", a.path("/logs"), a.admin, nil)).items(t) {
			if l["ts"] != e.clock.Now().Format(time.RFC3339) {
				t.Errorf("log entry %v filed at %v, want its arrival %v", l["type"], l["ts"], e.clock.Now())
			}
		}
		e.must(200, e.do("GET", "/api/v1/whoami", a.admin, nil))
	})
}

// TestStreamEndsWhenTheTokenExpires: a stream re-checks its token when
// something changes and at every resync (30 s), so an expired token kept
// feeding heartbeats, command results and logs until then. Every message
// now checks the expiry the token had when the stream opened (a later
// change of it reaches the stream as a change notification).
func TestStreamEndsWhenTheTokenExpires(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		s := newStreamEnv(t, dsn)
		f := s.tenant("acme")
		tok := s.must(201, s.do("POST", f.path("/tokens"), f.admin, map[string]any{"kind": "agent", "name": "short", "agent_id": f.agentID,
			"expires_at": s.clock.Now().Add(time.Minute)})).json(t)["token"].(string)
		c, _ := s.dial(tok)
		readType(t, c, wire.TypeState)
		write(t, c, wire.Msg{Type: wire.TypeHeartbeat, Status: "before"})
		readType(t, c, wire.TypeHeartbeatAck)
		s.clock.Add(time.Minute)
		write(t, c, wire.Msg{Type: wire.TypeHeartbeat, Status: "after"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				var ce websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "unauthorized") {
					t.Fatalf("close: %v", err)
				}
				break
			}
			var m wire.Msg
			if json.Unmarshal(b, &m) == nil && m.Type == wire.TypeHeartbeatAck {
				t.Fatal("heartbeat of an expired token acknowledged")
			}
		}
		ag := s.must(200, s.do("GET", f.path("/agents/"+f.agentID), f.admin, nil)).json(t)
		if ag["status"] != "before" {
			t.Fatalf("status %v: the expired token's heartbeat was taken", ag["status"])
		}
	})
}

// TestOpenAPIIsCheap: the OpenAPI document is public, and building it took
// about 10,000 allocations (some milliseconds of CPU) per request: an
// unauthenticated client could keep a core busy with a few hundred
// requests a second. The document never changes while the server runs,
// so it is built once.
func TestOpenAPIIsCheap(t *testing.T) {
	e := newEnv(t, "sqlite:"+t.TempDir()+"/c.db")
	h := e.srv.Handler()
	get := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
		return w
	}
	first := get()
	var doc map[string]any
	if first.Code != 200 || json.Unmarshal(first.Body.Bytes(), &doc) != nil || doc["openapi"] == nil {
		t.Fatalf("document: %d %.200s", first.Code, first.Body)
	}
	if n := testing.AllocsPerRun(20, func() { get() }); n > 200 {
		t.Fatalf("%.0f allocations per request for a fixed document", n)
	}
	if again := get(); again.Body.String() != first.Body.String() {
		t.Fatal("the document changed between requests")
	}
}

// TestResponseHardening: API answers (JSON, some carrying text an agent
// or a tenant wrote, such as log entries) are never sniffed as another
// type by a browser; superadmin tokens cannot name an agent.
func TestResponseHardening(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		for _, r := range []resp{
			e.do("GET", "/api/v1/healthz", "", nil),
			e.do("GET", "/api/v1/openapi.json", "", nil),
			e.do("GET", "/api/v1/whoami", "", nil),
			e.do("GET", "/api/v1/nope", "", nil),
			e.do("PUT", "/api/v1/whoami", "", nil),
			e.do("GET", a.path("/logs"), a.admin, nil),
			e.do("GET", "/api/v1/agent/policy", a.agent, nil),
		} {
			if r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("status %d %.80s: no nosniff", r.status, r.body)
			}
		}
		r := e.do("POST", "/api/v1/tokens", e.super, map[string]any{"name": "x", "agent_id": a.agentID})
		if r.status != 400 || r.json(t)["field"] != "agent_id" {
			t.Fatalf("superadmin token naming an agent: %d %s", r.status, r.body)
		}
	})
}

// TestListFiltersStayInTheTenant: filters that take an id (agent_id,
// object_id, actor) are added to the tenant's own condition, never
// replace it: another tenant's ids find nothing, in either store.
func TestListFiltersStayInTheTenant(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a, b := e.tenant("alpha"), e.tenant("beta")
		e.must(201, e.do("POST", b.path("/policies"), b.admin, map[string]any{"agent_id": b.agentID, "entry": map[string]any{"domain": "b.example"}}))
		e.must(202, e.do("POST", "/api/v1/agent/logs", b.agent, map[string]any{"entries": []any{map[string]any{"type": "http", "tenant_id": a.id, "agent_id": a.agentID}}}))
		e.must(201, e.do("POST", b.path("/agents/"+b.agentID+"/commands"), b.admin, map[string]any{"command": "stop"}))
		for _, q := range []string{
			"/policies?agent_id=" + b.agentID,
			"/logs?agent_id=" + b.agentID,
			"/logs?q=http",
			"/audit?object_id=" + b.agentID,
			"/audit?actor=" + b.adminID,
		} {
			if items := e.must(200, e.do("GET", a.path(q), a.admin, nil)).items(t); len(items) != 0 {
				t.Errorf("alpha %s: %v", q, items)
			}
			if strings.HasPrefix(q, "/audit?actor") {
				continue // b's admin made no change with that id as object
			}
			if items := e.must(200, e.do("GET", b.path(q), b.admin, nil)).items(t); len(items) == 0 {
				t.Errorf("beta %s: nothing (the filter itself is broken)", q)
			}
		}
		// A log entry cannot claim another tenant or agent.
		for _, l := range e.must(200, e.do("GET", b.path("/logs"), b.admin, nil)).items(t) {
			if l["tenant_id"] != b.id || l["agent_id"] != b.agentID || strings.Contains(string(marshal(t, l["data"])), a.id) {
				t.Errorf("log entry: %v", l)
			}
		}
		// Commands, agents and policies of b by id through a's paths: 404.
		e.must(404, e.do("GET", a.path("/agents/"+b.agentID+"/commands"), a.admin, nil))
		e.must(404, e.do("POST", a.path("/agents/"+b.agentID+"/commands"), a.admin, map[string]any{"command": "stop"}))
	})
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func quotas(q api.Quotas) option { return func(c *api.Config) { c.Quotas = q } }

// TestTenantQuotas: every tenant shares one database, and nothing bounded
// how many agents, policies, secrets, tokens or ACL entries one tenant
// creates. Past its quota a creation answers 403 quota_exceeded;
// replacing existing objects, other tenants and superadmin tokens are not
// affected, and deleting makes room again.
func TestTenantQuotas(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		// The fixture makes 1 agent and 3 tokens (admin, dev, agent).
		e := newEnv(t, dsn, quotas(api.Quotas{Agents: 2, Tokens: 5, Policies: 1, Secrets: 1, ACLs: 1}))
		a, b := e.tenant("alpha"), e.tenant("beta")
		quota := func(r resp) {
			t.Helper()
			if r.status != 403 || r.json(t)["error"] != "quota_exceeded" {
				t.Fatalf("want quota_exceeded: %d %s", r.status, r.body)
			}
		}
		second := e.must(201, e.do("POST", a.path("/agents"), a.admin, map[string]any{"name": "two"})).json(t) // tokens: 4
		quota(e.do("POST", a.path("/agents"), a.admin, map[string]any{"name": "three"}))
		e.must(201, e.do("POST", a.path("/tokens"), a.admin, map[string]any{"kind": "dev", "name": "d2"})) // tokens: 5
		quota(e.do("POST", a.path("/tokens"), a.admin, map[string]any{"kind": "dev", "name": "d3"}))
		quota(e.do("POST", a.path("/tokens"), e.super, map[string]any{"kind": "agent", "name": "a", "agent_id": a.agentID}))
		e.must(201, e.do("POST", "/api/v1/tokens", e.super, map[string]any{"name": "ops"}))

		pol := e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "one.example"}})).json(t)
		quota(e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "two.example"}}))
		e.must(200, e.do("PUT", a.path("/policies/"+pol["id"].(string)), a.admin, map[string]any{"entry": map[string]any{"domain": "one.example"}, "enabled": false}))

		e.must(201, e.do("PUT", a.path("/secrets/one"), a.admin, map[string]any{"value": "v1"}))
		e.must(200, e.do("PUT", a.path("/secrets/one"), a.admin, map[string]any{"value": "v2"}))
		e.must(200, e.do("POST", a.path("/secrets/one/rotate"), a.admin, map[string]any{"value": "v3"}))
		quota(e.do("PUT", a.path("/secrets/two"), a.admin, map[string]any{"value": "v"}))

		e.must(201, e.do("POST", a.path("/ip-acls"), a.admin, map[string]any{"cidr": "127.0.0.0/8"}))
		quota(e.do("POST", a.path("/ip-acls"), a.admin, map[string]any{"cidr": "10.0.0.0/8"}))

		// beta has its own quota.
		e.must(201, e.do("POST", b.path("/agents"), b.admin, map[string]any{"name": "two"}))
		e.must(201, e.do("POST", b.path("/policies"), b.admin, map[string]any{"entry": map[string]any{"domain": "one.example"}}))
		// Deleting makes room.
		e.must(204, e.do("DELETE", a.path("/agents/"+second["id"].(string)), a.admin, nil)) // and its token
		e.must(201, e.do("POST", a.path("/agents"), a.admin, map[string]any{"name": "three"}))
		e.must(204, e.do("DELETE", a.path("/policies/"+pol["id"].(string)), a.admin, nil))
		e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "two.example"}}))
	})
}
