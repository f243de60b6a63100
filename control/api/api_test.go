package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/control/api"
	"github.com/cagent-dev/cagent/control/keys"
	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/policy"
	"golang.org/x/time/rate"
)

func TestTokenLifecycle(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		m := e.must(201, e.do("POST", a.path("/tokens"), a.admin, map[string]any{"kind": "dev", "name": "ci",
			"expires_at": e.clock.Now().Add(time.Hour).Format(time.RFC3339)})).json(t)
		tok, id := m["token"].(string), m["id"].(string)
		if !strings.HasPrefix(tok, keys.TokenPrefix) || len(tok) < 43 {
			t.Fatalf("token %q", tok)
		}
		// The token is shown once: reads return metadata only.
		got := e.must(200, e.do("GET", a.path("/tokens/"+id), a.admin, nil))
		if strings.Contains(string(got.body), tok) || strings.Contains(string(got.body), "hash") || strings.Contains(string(got.body), "salt") {
			t.Fatalf("token metadata leaks: %s", got.body)
		}
		e.must(200, e.do("GET", "/api/v1/whoami", tok, nil))
		// Disable: refused at once; enable: accepted again.
		e.must(200, e.do("PATCH", a.path("/tokens/"+id), a.admin, map[string]any{"disabled": true}))
		e.must(401, e.do("GET", "/api/v1/whoami", tok, nil))
		e.must(200, e.do("PATCH", a.path("/tokens/"+id), a.admin, map[string]any{"disabled": false}))
		e.must(200, e.do("GET", "/api/v1/whoami", tok, nil))
		// Expiry.
		e.clock.Add(time.Hour)
		e.must(401, e.do("GET", "/api/v1/whoami", tok, nil))
		e.must(200, e.do("PATCH", a.path("/tokens/"+id), a.admin, map[string]any{"expires_at": e.clock.Now().Add(time.Hour)}))
		e.must(200, e.do("GET", "/api/v1/whoami", tok, nil))
		// Revocation is immediate.
		e.must(204, e.do("DELETE", a.path("/tokens/"+id), a.admin, nil))
		e.must(401, e.do("GET", "/api/v1/whoami", tok, nil))
		// Tampered and malformed tokens.
		for _, bad := range []string{"", "x", a.admin[:len(a.admin)-1] + "A", strings.Replace(a.admin, "_", "-", 1), a.admin + "x"} {
			if bad == a.admin {
				continue
			}
			r := e.do("GET", "/api/v1/whoami", bad, nil)
			if r.status != 401 {
				t.Errorf("token %q: status %d", bad, r.status)
			}
		}
		// Past expiry is refused at creation.
		r := e.must(400, e.do("POST", a.path("/tokens"), a.admin, map[string]any{"kind": "dev", "name": "x", "expires_at": "2001-01-01T00:00:00Z"}))
		if r.json(t)["field"] != "expires_at" {
			t.Fatalf("field: %s", r.body)
		}
		// Agent tokens need an agent of the same tenant.
		b := e.tenant("beta")
		e.must(400, e.do("POST", a.path("/tokens"), a.admin, map[string]any{"kind": "agent", "name": "x", "agent_id": b.agentID}))
		e.must(201, e.do("POST", a.path("/tokens"), a.admin, map[string]any{"kind": "agent", "name": "x", "agent_id": a.agentID}))
		// Admins cannot mint superadmin tokens.
		e.must(400, e.do("POST", a.path("/tokens"), a.admin, map[string]any{"kind": "superadmin", "name": "x"}))
	})
}

func TestTenantDeletionDisablesTokensAndAgents(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		e.must(204, e.do("DELETE", "/api/v1/tenants/"+a.id, e.super, nil))
		for _, tok := range []string{a.admin, a.dev, a.agent} {
			e.must(401, e.do("GET", "/api/v1/whoami", tok, nil))
		}
		e.must(404, e.do("GET", "/api/v1/tenants/"+a.id, e.super, nil))
		e.must(404, e.do("GET", a.path("/agents"), e.super, nil))
		e.must(404, e.do("DELETE", "/api/v1/tenants/"+a.id, e.super, nil))
	})
}

// TestNoCrossTenantPolicyLeak is the seed's fault: tenant-wide policies of
// one tenant reached agents of another on the agent-token read paths.
func TestNoCrossTenantPolicyLeak(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a, b := e.tenant("alpha"), e.tenant("beta")
		e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "a.example"}}))
		e.must(201, e.do("POST", b.path("/policies"), b.admin, map[string]any{"entry": map[string]any{"domain": "b-wide.example",
			"credential": map[string]any{"header": "X-Key", "secret": "shared"}}}))
		e.must(201, e.do("POST", b.path("/policies"), b.admin, map[string]any{"agent_id": b.agentID, "entry": map[string]any{"domain": "b-agent.example"}}))
		e.must(201, e.do("PUT", b.path("/secrets/shared"), b.admin, map[string]any{"value": "beta-secret-value"}))
		e.must(201, e.do("PUT", a.path("/secrets/shared"), a.admin, map[string]any{"value": "alpha-secret-value"}))

		for _, r := range []resp{
			e.must(200, e.do("GET", "/api/v1/agent/policy", a.agent, nil)),
			e.must(200, e.do("GET", "/api/v1/agent/policy?format=json", a.agent, nil)),
			e.must(200, e.do("GET", a.path("/agents/"+a.agentID+"/policy?format=yaml"), a.admin, nil)),
		} {
			if !strings.Contains(string(r.body), "a.example") || strings.Contains(string(r.body), "b-") {
				t.Fatalf("alpha's effective policy: %s", r.body)
			}
		}
		// alpha has a secret of the same name, but alpha's policy does not
		// reference it, and beta's value must never come back.
		r := e.do("GET", "/api/v1/agent/secrets/shared", a.agent, nil)
		if r.status != 404 || strings.Contains(string(r.body), "secret-value") {
			t.Fatalf("alpha agent read secret: %d %s", r.status, r.body)
		}
		r = e.must(200, e.do("GET", "/api/v1/agent/secrets/shared", b.agent, nil))
		if r.json(t)["value"] != "beta-secret-value" {
			t.Fatalf("beta agent: %s", r.body)
		}
		// An agent's own per-agent entries do not reach its siblings.
		sib := e.must(201, e.do("POST", b.path("/agents"), b.admin, map[string]any{"name": "sibling"})).json(t)
		r = e.must(200, e.do("GET", "/api/v1/agent/policy", sib["token"].(map[string]any)["token"].(string), nil))
		if strings.Contains(string(r.body), "b-agent.example") || !strings.Contains(string(r.body), "b-wide.example") {
			t.Fatalf("sibling policy: %s", r.body)
		}
	})
}

func TestPolicies(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		// Validation by the policy package, with the field named.
		for _, c := range []struct {
			body  string
			field string
		}{
			{`{"entry": {"domain": "bad domain"}}`, "entry.domain"},
			{`{"entry": {"domain": "x.example", "timeout": "soon"}}`, ""},
			{`{"entry": {"domain": "x.example", "credential": {"header": "Host", "secret": "k"}}}`, "entry.credential.header"},
			{`{"entry": {"domain": "x.example", "allowed_paths": ["nope"]}}`, "entry.allowed_paths[0]"},
			{`{"entry": {"domain": "x.example", "bogus": 1}}`, "entry.bogus"},
			{`{"entry": {"domain": "x.example", "ports": [70000]}}`, "entry.ports[0]"},
			{`{}`, "entry"},
			{`{"entry": {"domain": "x.example"}, "agent_id": "nope"}`, "agent_id"},
		} {
			r := e.do("POST", a.path("/policies"), a.admin, c.body)
			if r.status != 400 {
				t.Errorf("%s: status %d %s", c.body, r.status, r.body)
				continue
			}
			if m := r.json(t); c.field != "" && m["field"] != c.field {
				t.Errorf("%s: field %v, want %s (%s)", c.body, m["field"], c.field, r.body)
			}
		}
		wide := e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{
			"domain": "API.Example.com.", "alias": "api", "timeout": "30s", "read_only": true, "allowed_paths": []string{"/v1/*"},
			"rate_limit": map[string]any{"requests_per_minute": 60, "burst_size": 10}, "egress_limit": "10MiB",
			"credential": map[string]any{"header": "Authorization", "format": "Bearer {value}", "secret": "openai"}}})).json(t)
		if wide["domain"] != "api.example.com" {
			t.Fatalf("domain not normalized: %v", wide["domain"])
		}
		e.must(409, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "api.example.com"}}))
		// Another entry may not claim the same alias.
		r := e.must(400, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "other.example", "alias": "api"}}))
		if !strings.Contains(r.json(t)["message"].(string), "alias") {
			t.Fatalf("alias conflict: %s", r.body)
		}
		e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "*.github.com"}}))
		// A per-agent entry overrides the tenant-wide one for its agent.
		over := e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"agent_id": a.agentID, "entry": map[string]any{"domain": "api.example.com", "timeout": "99s"}})).json(t)
		pol := func(tok string) *policy.Policy {
			r := e.must(200, e.do("GET", "/api/v1/agent/policy", tok, nil))
			if r.header.Get("Content-Type") != "application/yaml" {
				t.Fatalf("content type %q", r.header.Get("Content-Type"))
			}
			p, err := policy.Parse("export.yaml", r.body)
			if err != nil {
				t.Fatalf("exported YAML does not parse: %v\n%s", err, r.body)
			}
			return p
		}
		p := pol(a.agent)
		d := p.Lookup("api.example.com")
		if d == nil || d.Timeout.D() != 99*time.Second || d.ReadOnly || len(p.Domains) != 2 {
			t.Fatalf("override not applied: %+v", p.Domains)
		}
		// Disabling the override falls back to the tenant-wide entry, with
		// every field surviving the YAML round trip.
		e.must(200, e.do("PUT", a.path("/policies/"+over["id"].(string)), a.admin, map[string]any{"agent_id": a.agentID, "entry": map[string]any{"domain": "api.example.com", "timeout": "99s"}, "enabled": false}))
		p = pol(a.agent)
		d = p.Lookup("api.example.com")
		if d == nil || d.Timeout.D() != 30*time.Second || !d.ReadOnly || d.Alias != "api" || d.EgressLimit == nil || *d.EgressLimit != 10<<20 ||
			d.RateLimit == nil || d.RateLimit.BurstSize != 10 || d.Credential == nil || d.Credential.Secret != "openai" || !slices.Equal(d.AllowedPaths, []string{"/v1/*"}) {
			t.Fatalf("tenant-wide entry after YAML round trip: %+v", d)
		}
		// Disabling the tenant-wide entry removes the domain.
		e.must(200, e.do("PUT", a.path("/policies/"+wide["id"].(string)), a.admin, map[string]any{"entry": map[string]any{"domain": "api.example.com"}, "enabled": false}))
		if pol(a.agent).Lookup("api.example.com") != nil {
			t.Fatal("disabled entry still effective")
		}
		// Moving an entry between scopes is refused.
		e.must(400, e.do("PUT", a.path("/policies/"+wide["id"].(string)), a.admin, map[string]any{"agent_id": a.agentID, "entry": map[string]any{"domain": "api.example.com"}}))
		items := e.must(200, e.do("GET", a.path("/policies?agent_id="+a.agentID), a.dev, nil)).items(t)
		if len(items) != 1 {
			t.Fatalf("per-agent list: %v", items)
		}
		items = e.must(200, e.do("GET", a.path("/policies?agent_id="), a.dev, nil)).items(t)
		if len(items) != 2 {
			t.Fatalf("tenant-wide list: %v", items)
		}
		if !slices.Contains(e.notices, a.id+"/"+a.agentID) || !slices.Contains(e.notices, a.id+"/") {
			t.Fatalf("notify not called: %v", e.notices)
		}
	})
}

func TestSecretsWriteOnly(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		const v1, v2 = "sk-first-value-1234567890", "sk-second-value-0987654321"
		e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "api.example", "credential": map[string]any{"header": "X-Key", "secret": "k"}}}))
		for _, r := range []resp{
			e.must(201, e.do("PUT", a.path("/secrets/k"), a.admin, map[string]any{"value": v1})),
			e.must(200, e.do("GET", a.path("/secrets"), a.dev, nil)),
			e.must(200, e.do("POST", a.path("/secrets/k/rotate"), a.admin, map[string]any{"value": v2})),
			e.must(200, e.do("GET", a.path("/audit"), a.admin, nil)),
		} {
			if strings.Contains(string(r.body), v1) || strings.Contains(string(r.body), v2) {
				t.Fatalf("secret value in response: %s", r.body)
			}
		}
		e.must(404, e.do("POST", a.path("/secrets/missing/rotate"), a.admin, map[string]any{"value": "x"}))
		e.must(400, e.do("PUT", a.path("/secrets/k"), a.admin, map[string]any{"value": ""}))
		e.must(400, e.do("PUT", a.path("/secrets/bad%20name"), a.admin, map[string]any{"value": "x"}))
		r := e.must(200, e.do("GET", "/api/v1/agent/secrets/k", a.agent, nil)).json(t)
		if r["value"] != v2 || r["version"].(float64) != 2 {
			t.Fatalf("agent secret: %v", r)
		}
		// No endpoint returns the value to a human token.
		for _, tok := range []string{e.super, a.admin, a.dev} {
			e.must(403, e.do("GET", "/api/v1/agent/secrets/k", tok, nil))
		}
		e.must(204, e.do("DELETE", a.path("/secrets/k"), a.admin, nil))
		e.must(404, e.do("GET", "/api/v1/agent/secrets/k", a.agent, nil))
	})
}

func TestAgentsHeartbeatsCommands(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		ag := a.path("/agents/" + a.agentID)
		if e.must(200, e.do("GET", ag, a.dev, nil)).json(t)["online"] != false {
			t.Fatal("online before any heartbeat")
		}
		hb := e.must(200, e.do("POST", "/api/v1/agent/heartbeat", a.agent, map[string]any{"status": "running", "metrics": map[string]any{"cpu": 0.5}})).json(t)
		if hb["command"] != nil {
			t.Fatalf("unexpected command %v", hb)
		}
		m := e.must(200, e.do("GET", ag, a.dev, nil)).json(t)
		if m["online"] != true || m["status"] != "running" || m["metrics"].(map[string]any)["cpu"] != 0.5 {
			t.Fatalf("agent after heartbeat: %v", m)
		}
		e.clock.Add(59 * time.Second)
		if e.must(200, e.do("GET", ag, a.dev, nil)).json(t)["online"] != true {
			t.Fatal("offline at 59s")
		}
		e.clock.Add(time.Second)
		if e.must(200, e.do("GET", ag, a.dev, nil)).json(t)["online"] != false {
			t.Fatal("online at 60s")
		}
		e.must(400, e.do("POST", "/api/v1/agent/heartbeat", a.agent, map[string]any{"metrics": []int{1}}))
		e.must(400, e.do("POST", ag+"/commands", a.admin, map[string]any{"command": "restart", "wipe_workspace": true}))
		e.must(400, e.do("POST", ag+"/commands", a.admin, map[string]any{"command": "explode"}))
		c := e.must(201, e.do("POST", ag+"/commands", a.admin, map[string]any{"command": "wipe", "wipe_workspace": true})).json(t)
		e.must(409, e.do("POST", ag+"/commands", a.admin, map[string]any{"command": "stop"}))
		hb = e.must(200, e.do("POST", "/api/v1/agent/heartbeat", a.agent, map[string]any{"status": "running"})).json(t)
		cmd := hb["command"].(map[string]any)
		if cmd["id"] != c["id"] || cmd["command"] != "wipe" || cmd["wipe_workspace"] != true || cmd["status"] != "delivered" {
			t.Fatalf("delivered command: %v", cmd)
		}
		e.must(409, e.do("POST", ag+"/commands", a.admin, map[string]any{"command": "stop"}))
		// Another agent cannot complete it.
		b := e.tenant("beta")
		e.must(200, e.do("POST", "/api/v1/agent/heartbeat", b.agent, map[string]any{"command_results": []any{map[string]any{"id": c["id"], "status": "failed"}}}))
		hb = e.must(200, e.do("POST", "/api/v1/agent/heartbeat", a.agent, map[string]any{"command_results": []any{map[string]any{"id": c["id"], "status": "succeeded", "result": "wiped"}}})).json(t)
		if hb["command"] != nil {
			t.Fatalf("command still pending: %v", hb)
		}
		cs := e.must(200, e.do("GET", ag+"/commands", a.dev, nil)).items(t)
		if len(cs) != 1 || cs[0]["status"] != "succeeded" || cs[0]["result"] != "wiped" {
			t.Fatalf("commands: %v", cs)
		}
		e.must(201, e.do("POST", ag+"/commands", a.admin, map[string]any{"command": "stop"}))
		// Deleting the agent revokes its token.
		e.must(204, e.do("DELETE", ag, a.admin, nil))
		e.must(401, e.do("POST", "/api/v1/agent/heartbeat", a.agent, map[string]any{}))
	})
}

func TestIPACLAndTrustedProxies(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, trusted("127.0.0.1/32"))
		a := e.tenant("alpha")
		e.must(201, e.do("POST", a.path("/ip-acls"), a.admin, map[string]any{"cidr": "203.0.113.0/24"}))
		// The direct peer (127.0.0.1, a trusted proxy) with no XFF: denied.
		for _, tok := range []string{a.admin, a.dev} {
			r := e.must(403, e.do("GET", a.path("/agents"), tok, nil))
			if r.json(t)["error"] != "ip_not_allowed" || strings.Contains(string(r.body), "127.0.0.1") {
				t.Fatalf("denial: %s", r.body)
			}
		}
		// Via the trusted proxy from an allowed client.
		e.must(200, e.do("GET", a.path("/agents"), a.dev, nil, "X-Forwarded-For", "203.0.113.9"))
		// A client cannot prepend its way in: the right-most untrusted hop counts.
		r := e.must(403, e.do("GET", a.path("/agents"), a.dev, nil, "X-Forwarded-For", "203.0.113.9, 198.51.100.7"))
		if strings.Contains(string(r.body), "198.51.100.7") {
			t.Fatalf("denial echoes the address: %s", r.body)
		}
		// Superadmin and agent tokens are not subject to tenant ACLs.
		e.must(200, e.do("GET", a.path("/agents"), e.super, nil))
		e.must(200, e.do("POST", "/api/v1/agent/heartbeat", a.agent, map[string]any{}))
		// The audit trail records where the change came from.
		e.clock.Add(time.Second)
		e.must(201, e.do("POST", a.path("/ip-acls"), a.admin, map[string]any{"cidr": "10.1.0.0/16"}, "X-Forwarded-For", "203.0.113.9"))
		au := e.must(200, e.do("GET", a.path("/audit?action=ip_acl.create&limit=1"), a.admin, nil, "X-Forwarded-For", "203.0.113.9")).items(t)
		if len(au) != 1 || au[0]["remote_addr"] != "203.0.113.9" || au[0]["actor_token_id"] != a.adminID {
			t.Fatalf("audit: %v", au)
		}

		// Without trusted proxies X-Forwarded-For is ignored.
		e2 := newEnv(t, dsn)
		b := e2.tenant("beta")
		e2.must(201, e2.do("POST", b.path("/ip-acls"), b.admin, map[string]any{"cidr": "203.0.113.0/24"}))
		e2.must(403, e2.do("GET", b.path("/agents"), b.admin, nil, "X-Forwarded-For", "203.0.113.9"))
	})
}

func TestRateLimit(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, func(c *api.Config) { c.Rate, c.Burst = rate.Limit(1), 3 })
		got429 := false
		for i := 0; i < 5; i++ {
			r := e.do("GET", "/api/v1/whoami", e.super, nil)
			if r.status == 429 {
				got429 = true
				if r.header.Get("Retry-After") == "" || r.json(t)["error"] != "rate_limited" {
					t.Fatalf("429 without Retry-After: %v %s", r.header, r.body)
				}
			}
		}
		if !got429 {
			t.Fatal("no 429 after the burst")
		}
		// The limit is per token: another token is unaffected.
		k, _ := e.hasher.NewToken()
		if err := e.st.CreateToken(context.Background(), store.Token{ID: k.ID, Kind: store.KindSuperadmin, Salt: k.Salt, Hash: k.Hash, CreatedAt: e.clock.Now()}); err != nil {
			t.Fatal(err)
		}
		e.must(200, e.do("GET", "/api/v1/whoami", k.Plain, nil))
		// And the bucket refills with time.
		e.clock.Add(10 * time.Second)
		e.must(200, e.do("GET", "/api/v1/whoami", e.super, nil))
	})
}

func TestAuditTrail(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a, b := e.tenant("alpha"), e.tenant("beta")
		p := e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "x.example"}})).json(t)
		e.clock.Add(time.Minute)
		e.must(204, e.do("DELETE", a.path("/policies/"+p["id"].(string)), a.admin, nil))
		e.must(201, e.do("POST", b.path("/policies"), b.admin, map[string]any{"entry": map[string]any{"domain": "y.example"}}))
		all := e.must(200, e.do("GET", a.path("/audit"), a.admin, nil)).items(t)
		for _, x := range all {
			if x["tenant_id"] != a.id {
				t.Fatalf("foreign audit entry: %v", x)
			}
		}
		f := e.must(200, e.do("GET", a.path("/audit?object_type=policy"), a.admin, nil)).items(t)
		if len(f) != 2 || f[0]["action"] != "policy.delete" || f[1]["action"] != "policy.create" || f[0]["remote_addr"] != "127.0.0.1" {
			t.Fatalf("policy audit: %v", f)
		}
		since := e.clock.Now().Format(time.RFC3339Nano)
		f = e.must(200, e.do("GET", a.path("/audit?object_type=policy&since="+since), a.admin, nil)).items(t)
		if len(f) != 1 {
			t.Fatalf("since filter: %v", f)
		}
		e.must(400, e.do("GET", a.path("/audit?since=yesterday"), a.admin, nil))
		g := e.must(200, e.do("GET", "/api/v1/audit?action=tenant.create", e.super, nil)).items(t)
		if len(g) != 2 {
			t.Fatalf("global audit: %v", g)
		}
	})
}

func TestLogs(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, func(c *api.Config) { c.MaxLogBatch = 3; c.MaxLogBody = 4096 })
		a, b := e.tenant("alpha"), e.tenant("beta")
		ts := e.clock.Now().Add(-time.Minute).Format(time.RFC3339Nano)
		e.must(202, e.do("POST", "/api/v1/agent/logs", a.agent, map[string]any{"entries": []any{
			map[string]any{"ts": ts, "type": "http", "host": "api.example", "tenant_id": b.id, "agent_id": b.agentID, "agent": "spoof", "tenant": "spoof"},
			map[string]any{"type": "dns", "qname": "x.example"},
		}}))
		e.must(413, e.do("POST", "/api/v1/agent/logs", a.agent, map[string]any{"entries": []any{map[string]any{}, map[string]any{}, map[string]any{}, map[string]any{}}}))
		e.must(413, e.do("POST", "/api/v1/agent/logs", a.agent, map[string]any{"entries": []any{map[string]any{"x": strings.Repeat("a", 5000)}}}))
		e.must(400, e.do("POST", "/api/v1/agent/logs", a.agent, map[string]any{"entries": []any{"not an object"}}))
		e.must(400, e.do("POST", "/api/v1/agent/logs", a.agent, map[string]any{"entries": []any{}}))
		// Only agent tokens ingest.
		e.must(403, e.do("POST", "/api/v1/agent/logs", a.admin, map[string]any{"entries": []any{map[string]any{}}}))

		if n := len(e.must(200, e.do("GET", b.path("/logs"), b.admin, nil)).items(t)); n != 0 {
			t.Fatalf("spoofed entries reached beta: %d", n)
		}
		items := e.must(200, e.do("GET", a.path("/logs?type=http"), a.dev, nil)).items(t)
		if len(items) != 1 || items[0]["agent_id"] != a.agentID || items[0]["tenant_id"] != a.id {
			t.Fatalf("logs: %v", items)
		}
		data, _ := json.Marshal(items[0]["data"])
		if strings.Contains(string(data), "spoof") || strings.Contains(string(data), b.id) || !strings.Contains(string(data), "api.example") {
			t.Fatalf("stored data: %s", data)
		}
		if items[0]["ts"] != ts {
			t.Fatalf("ts %v, want %s", items[0]["ts"], ts)
		}
		if n := len(e.must(200, e.do("GET", a.path("/logs?q=X.EXAMPLE"), a.dev, nil)).items(t)); n != 1 {
			t.Fatalf("text filter: %d", n)
		}
		if n := len(e.must(200, e.do("GET", a.path("/logs?until="+ts), a.dev, nil)).items(t)); n != 0 {
			t.Fatalf("until filter: %d", n)
		}
		if n := len(e.must(200, e.do("GET", a.path("/logs?limit=1"), a.dev, nil)).items(t)); n != 1 {
			t.Fatalf("limit: %d", n)
		}
		e.must(400, e.do("GET", a.path("/logs?limit=0"), a.dev, nil))
		e.must(400, e.do("GET", a.path("/logs?limit=5000"), a.dev, nil))
	})
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := newEnv(t, "sqlite:"+t.TempDir()+"/c.db")
	// Everything served under /api/, including the routes outside the
	// route table (stream, enrolment).
	outside := mountAll(t, e)
	r := e.must(200, e.do("GET", "/api/v1/openapi.json", "", nil))
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	routes := map[string]bool{}
	// Every pattern served outside the table is documented, by a route
	// whose pattern and method are served.
	outsidePaths := map[string]bool{}
	for _, rt := range e.srv.OutsideRoutes() {
		outsidePaths[rt.Pattern] = true
	}
	for _, p := range outside {
		if !outsidePaths[p] {
			t.Errorf("%s is served outside the route table but has no documented route", p)
		}
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("%s is served but missing from the document", p)
		}
	}
	for _, rt := range append(e.srv.Routes(), e.srv.OutsideRoutes()...) {
		k := strings.ToLower(rt.Method) + " " + rt.Pattern
		routes[k] = true
		op, ok := doc.Paths[rt.Pattern][strings.ToLower(rt.Method)]
		if !ok {
			t.Errorf("route %s missing from the document", k)
			continue
		}
		if (rt.Body != nil) != (op["requestBody"] != nil) {
			t.Errorf("%s: request body mismatch", k)
		}
		if ws := op["x-websocket"] != nil && op["responses"].(map[string]any)["101"] != nil; ws != rt.WebSocket {
			t.Errorf("%s: WebSocket %v, documented %v", k, rt.WebSocket, ws)
		}
		// The mux really serves it: a request reaches the route, not the
		// catch-all "no such endpoint".
		path := strings.NewReplacer("{tenant}", "t", "{agent}", "a", "{policy}", "p", "{token}", "k", "{name}", "n", "{acl}", "x").Replace(rt.Pattern)
		res := e.do(rt.Method, path, "", nil)
		if strings.Contains(string(res.body), "no such endpoint") || res.status == http.StatusMethodNotAllowed {
			t.Errorf("%s is in the table but not served: %d %s", k, res.status, res.body)
		}
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if !routes[m+" "+p] {
				t.Errorf("document has %s %s, which no handler serves", m, p)
			}
		}
	}
	e.must(404, e.do("GET", "/api/v1/nope", e.super, nil))
	r = e.must(405, e.do("PUT", "/api/v1/tenants", e.super, nil))
	if r.header.Get("Allow") != "GET, POST" || r.json(t)["error"] != "method_not_allowed" {
		t.Fatalf("405: %v %s", r.header, r.body)
	}
}

// TestRawRowsHoldNoPlaintext scans every column of every table for tokens
// and secret values in any common encoding, and checks token hashes are
// keyed and salted (the seed stored unsalted hashes).
func TestRawRowsHoldNoPlaintext(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		a := e.tenant("alpha")
		const secret = "sk-live-PLAINTEXT-canary-0123456789"
		e.must(201, e.do("PUT", a.path("/secrets/canary"), a.admin, map[string]any{"value": secret}))
		e.must(200, e.do("POST", a.path("/secrets/canary/rotate"), a.admin, map[string]any{"value": secret + "2"}))
		tokens := []string{e.super, a.admin, a.dev, a.agent}
		var needles []string
		add := func(s string) {
			sum := sha256.Sum256([]byte(s))
			needles = append(needles, s, base64.StdEncoding.EncodeToString([]byte(s)), hex.EncodeToString([]byte(s)), hex.EncodeToString(sum[:]), base64.StdEncoding.EncodeToString(sum[:]))
		}
		for _, tok := range tokens {
			add(tok)
			_, sec, _ := keys.ParseToken(tok)
			add(sec)
		}
		add(secret)
		add(secret + "2")

		db := e.st.DB()
		var tables []string
		q := `SELECT name FROM sqlite_master WHERE type = 'table'`
		if e.st.Postgres() {
			q = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`
		}
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var n string
			rows.Scan(&n)
			tables = append(tables, n)
		}
		rows.Close()
		if len(tables) < 10 {
			t.Fatalf("only %d tables: %v", len(tables), tables)
		}
		cells := 0
		for _, tb := range tables {
			rows, err := db.Query("SELECT * FROM " + tb)
			if err != nil {
				t.Fatal(err)
			}
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				for i, v := range vals {
					cells++
					s := fmt.Sprint(v)
					if b, ok := v.([]byte); ok {
						s = string(b)
					}
					for _, n := range needles {
						if strings.Contains(s, n) {
							t.Errorf("table %s column %s holds a plaintext token or secret (%q)", tb, cols[i], n[:8])
						}
					}
				}
			}
			rows.Close()
		}
		if cells < 50 {
			t.Fatalf("scanned only %d cells", cells)
		}
		// Salted: tokens never share a hash, and the same secret under two
		// salts hashes differently.
		var distinct, total int
		db.QueryRow(`SELECT COUNT(DISTINCT salt), COUNT(*) FROM tokens`).Scan(&distinct, &total)
		if distinct != total || total < 4 {
			t.Fatalf("salts: %d distinct of %d", distinct, total)
		}
	})
}

func TestHashIsSaltedAndKeyed(t *testing.T) {
	h1, _ := keys.NewHasher(make([]byte, 32))
	k := make([]byte, 32)
	k[0] = 1
	h2, _ := keys.NewHasher(k)
	tok, _ := h1.NewToken()
	id, sec, ok := keys.ParseToken(tok.Plain)
	if !ok || id != tok.ID || !h1.Verify(tok.Salt, tok.Hash, sec) {
		t.Fatal("round trip failed")
	}
	if h2.Verify(tok.Salt, tok.Hash, sec) {
		t.Fatal("hash verifies under another server key")
	}
	if h1.Verify("00"+tok.Salt[2:], tok.Hash, sec) {
		t.Fatal("hash verifies under another salt")
	}
	sum := sha256.Sum256([]byte(sec))
	if tok.Hash == hex.EncodeToString(sum[:]) {
		t.Fatal("unsalted hash")
	}
	if _, err := keys.NewHasher(make([]byte, 16)); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestHeartbeatsReachTheStore(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, func(c *api.Config) { c.HeartbeatFlush = 10 * time.Millisecond })
		a := e.tenant("alpha")
		e.must(200, e.do("POST", "/api/v1/agent/heartbeat", a.agent, map[string]any{"status": "busy"}))
		deadline := time.Now().Add(5 * time.Second)
		for {
			ag, err := e.st.GetAgent(context.Background(), a.id, a.agentID)
			if err != nil {
				t.Fatal(err)
			}
			if ag.Status == "busy" && ag.LastHeartbeat.Equal(e.clock.Now()) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("heartbeat not written: %+v", ag)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Close writes what is still buffered.
		e.clock.Add(time.Second)
		e.must(200, e.do("POST", "/api/v1/agent/heartbeat", a.agent, map[string]any{"status": "last"}))
		e.srv.Close()
		ag, _ := e.st.GetAgent(context.Background(), a.id, a.agentID)
		if ag.Status != "last" {
			t.Fatalf("buffered heartbeat lost at close: %+v", ag)
		}
	})
}

// TestInvalidStoredEntryLeftOut: an entry that no longer validates (e.g.
// after a stricter policy package) drops out of the effective policy
// instead of failing the agent's every read.
func TestInvalidStoredEntryLeftOut(t *testing.T) {
	e := newEnv(t, "sqlite:"+t.TempDir()+"/c.db")
	a := e.tenant("alpha")
	e.must(201, e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "good.example"}}))
	now := e.clock.Now()
	if err := e.st.CreatePolicy(context.Background(), store.Policy{ID: "bad", TenantID: a.id, Domain: "bad", Entry: json.RawMessage(`{"domain":"bad domain"}`), Enabled: true, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	r := e.must(200, e.do("GET", "/api/v1/agent/policy", a.agent, nil))
	if !strings.Contains(string(r.body), "good.example") || strings.Contains(string(r.body), "bad domain") {
		t.Fatalf("policy: %s", r.body)
	}
}

// failingAudit is a store whose audit writes fail, inside transactions too.
type failingAudit struct{ store.Store }

func (f failingAudit) AppendAudit(context.Context, store.AuditEntry) error {
	return errors.New("audit log unavailable")
}

func (f failingAudit) InTx(ctx context.Context, fn func(store.Store) error) error {
	return f.Store.InTx(ctx, func(st store.Store) error { return fn(failingAudit{st}) })
}

// TestChangeWithoutAuditIsRolledBack: a change whose audit record cannot be
// written does not happen.
func TestChangeWithoutAuditIsRolledBack(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		var broken atomic.Bool
		e := newEnv(t, dsn, func(c *api.Config) { c.Store = switchable{c.Store, &broken} })
		a := e.tenant("alpha")
		broken.Store(true)
		r := e.do("POST", a.path("/policies"), a.admin, map[string]any{"entry": map[string]any{"domain": "x.example"}})
		if r.status != 500 || strings.Contains(string(r.body), "audit log unavailable") {
			t.Fatalf("status %d %s", r.status, r.body)
		}
		e.do("POST", a.path("/agents"), a.admin, map[string]any{"name": "ghost"})
		e.do("PUT", a.path("/secrets/k"), a.admin, map[string]any{"value": "v"})
		broken.Store(false)
		if n := len(e.must(200, e.do("GET", a.path("/policies"), a.admin, nil)).items(t)); n != 0 {
			t.Fatalf("%d policies after a failed audit", n)
		}
		if n := len(e.must(200, e.do("GET", a.path("/agents"), a.admin, nil)).items(t)); n != 1 {
			t.Fatalf("%d agents after a failed audit", n)
		}
		if n := len(e.must(200, e.do("GET", a.path("/secrets"), a.admin, nil)).items(t)); n != 0 {
			t.Fatalf("%d secrets after a failed audit", n)
		}
	})
}

// switchable fails audit writes while broken is set.
type switchable struct {
	store.Store
	broken *atomic.Bool
}

func (s switchable) InTx(ctx context.Context, fn func(store.Store) error) error {
	if !s.broken.Load() {
		return s.Store.InTx(ctx, fn)
	}
	return failingAudit{s.Store}.InTx(ctx, fn)
}
