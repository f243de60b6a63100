package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cagent-dev/cagent/control/store"
)

// spec describes how to exercise one route in the authorization matrix.
type spec struct {
	allowed []string // token kinds that succeed on their own tenant
	ok      int      // success status
	// prep creates fresh objects in tn (the target tenant) and returns the
	// path values; the request acts on them.
	prep func(e *env, tn *tenantFx) map[string]string
	body func(e *env, tn *tenantFx) any
	// otherStatus is what a permitted kind gets on the other tenant's
	// objects for routes without {tenant} (default 404).
	otherStatus int
	// fresh: use a fresh pair of tenants for each case (tenant deletion).
	fresh bool
}

var (
	kinds   = []string{store.KindSuperadmin, store.KindAdmin, store.KindDev, store.KindAgent}
	super   = []string{store.KindSuperadmin}
	admins  = []string{store.KindSuperadmin, store.KindAdmin}
	readers = []string{store.KindSuperadmin, store.KindAdmin, store.KindDev}
	agentK  = []string{store.KindAgent}
)

func newAgent(e *env, tn *tenantFx) string {
	return e.must(201, e.do("POST", tn.path("/agents"), e.super, map[string]any{"name": fmt.Sprintf("a%d", seq())})).json(e.t)["id"].(string)
}

var counter atomic.Int64

func seq() int64 { return counter.Add(1) }

func newPolicy(e *env, tn *tenantFx) string {
	return e.must(201, e.do("POST", tn.path("/policies"), e.super, map[string]any{"entry": map[string]any{"domain": fmt.Sprintf("d%d.example", seq())}})).json(e.t)["id"].(string)
}

func newToken(e *env, tn *tenantFx) string {
	return e.must(201, e.do("POST", tn.path("/tokens"), e.super, map[string]any{"kind": "dev", "name": "victim"})).json(e.t)["id"].(string)
}

func newSecret(e *env, tn *tenantFx) string {
	n := fmt.Sprintf("S%d", seq())
	e.must(201, e.do("PUT", tn.path("/secrets/"+n), e.super, map[string]any{"value": "v"}))
	return n
}

func pv(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func matrixSpecs() map[string]spec {
	none := func(e *env, tn *tenantFx) map[string]string { return pv() }
	agent := func(e *env, tn *tenantFx) map[string]string { return pv("agent", tn.agentID) }
	return map[string]spec{
		"GET /api/v1/whoami": {allowed: kinds, ok: 200, prep: none, otherStatus: 200},

		"GET /api/v1/tenants":             {allowed: super, ok: 200, prep: none, otherStatus: 200},
		"POST /api/v1/tenants":            {allowed: super, ok: 201, prep: none, otherStatus: 201, body: func(e *env, tn *tenantFx) any { return map[string]any{"name": fmt.Sprintf("t%d", seq())} }},
		"GET /api/v1/tenants/{tenant}":    {allowed: super, ok: 200, prep: none},
		"DELETE /api/v1/tenants/{tenant}": {allowed: super, ok: 204, prep: none, fresh: true},

		"GET /api/v1/tokens":  {allowed: super, ok: 200, prep: none, otherStatus: 200},
		"POST /api/v1/tokens": {allowed: super, ok: 201, prep: none, otherStatus: 201, body: func(e *env, tn *tenantFx) any { return map[string]any{"name": "s"} }},
		"DELETE /api/v1/tokens/{token}": {allowed: super, ok: 204, otherStatus: 204, prep: func(e *env, tn *tenantFx) map[string]string {
			return pv("token", e.must(201, e.do("POST", "/api/v1/tokens", e.super, map[string]any{"name": "x"})).json(e.t)["id"].(string))
		}},
		"PATCH /api/v1/tokens/{token}": {allowed: super, ok: 200, otherStatus: 200, prep: func(e *env, tn *tenantFx) map[string]string {
			return pv("token", e.must(201, e.do("POST", "/api/v1/tokens", e.super, map[string]any{"name": "x"})).json(e.t)["id"].(string))
		}, body: func(e *env, tn *tenantFx) any { return map[string]any{"disabled": true} }},
		"GET /api/v1/audit": {allowed: super, ok: 200, prep: none, otherStatus: 200},

		"GET /api/v1/tenants/{tenant}/tokens":         {allowed: admins, ok: 200, prep: none},
		"POST /api/v1/tenants/{tenant}/tokens":        {allowed: admins, ok: 201, prep: none, body: func(e *env, tn *tenantFx) any { return map[string]any{"kind": "dev", "name": "n"} }},
		"GET /api/v1/tenants/{tenant}/tokens/{token}": {allowed: admins, ok: 200, prep: func(e *env, tn *tenantFx) map[string]string { return pv("token", newToken(e, tn)) }},
		"PATCH /api/v1/tenants/{tenant}/tokens/{token}": {allowed: admins, ok: 200, prep: func(e *env, tn *tenantFx) map[string]string { return pv("token", newToken(e, tn)) },
			body: func(e *env, tn *tenantFx) any { return map[string]any{"disabled": true} }},
		"DELETE /api/v1/tenants/{tenant}/tokens/{token}": {allowed: admins, ok: 204, prep: func(e *env, tn *tenantFx) map[string]string { return pv("token", newToken(e, tn)) }},

		"GET /api/v1/tenants/{tenant}/agents":                          {allowed: readers, ok: 200, prep: none},
		"POST /api/v1/tenants/{tenant}/agents":                         {allowed: admins, ok: 201, prep: none, body: func(e *env, tn *tenantFx) any { return map[string]any{"name": fmt.Sprintf("n%d", seq())} }},
		"GET /api/v1/tenants/{tenant}/agents/{agent}":                  {allowed: readers, ok: 200, prep: agent},
		"DELETE /api/v1/tenants/{tenant}/agents/{agent}":               {allowed: admins, ok: 204, prep: func(e *env, tn *tenantFx) map[string]string { return pv("agent", newAgent(e, tn)) }},
		"GET /api/v1/tenants/{tenant}/agents/{agent}/policy":           {allowed: readers, ok: 200, prep: agent},
		"GET /api/v1/tenants/{tenant}/agents/{agent}/commands":         {allowed: readers, ok: 200, prep: agent},
		"POST /api/v1/tenants/{tenant}/agents/{agent}/terminal/ticket": {allowed: readers, ok: 201, prep: agent},
		"POST /api/v1/tenants/{tenant}/agents/{agent}/commands": {allowed: admins, ok: 201, prep: func(e *env, tn *tenantFx) map[string]string { return pv("agent", newAgent(e, tn)) },
			body: func(e *env, tn *tenantFx) any { return map[string]any{"command": "restart"} }},

		"GET /api/v1/tenants/{tenant}/policies": {allowed: readers, ok: 200, prep: none},
		"POST /api/v1/tenants/{tenant}/policies": {allowed: admins, ok: 201, prep: none,
			body: func(e *env, tn *tenantFx) any {
				return map[string]any{"entry": map[string]any{"domain": fmt.Sprintf("p%d.example", seq())}}
			}},
		"GET /api/v1/tenants/{tenant}/policies/{policy}": {allowed: readers, ok: 200, prep: func(e *env, tn *tenantFx) map[string]string { return pv("policy", newPolicy(e, tn)) }},
		"PUT /api/v1/tenants/{tenant}/policies/{policy}": {allowed: admins, ok: 200, prep: func(e *env, tn *tenantFx) map[string]string { return pv("policy", newPolicy(e, tn)) },
			body: func(e *env, tn *tenantFx) any {
				return map[string]any{"entry": map[string]any{"domain": fmt.Sprintf("u%d.example", seq())}, "enabled": false}
			}},
		"DELETE /api/v1/tenants/{tenant}/policies/{policy}": {allowed: admins, ok: 204, prep: func(e *env, tn *tenantFx) map[string]string { return pv("policy", newPolicy(e, tn)) }},

		"GET /api/v1/tenants/{tenant}/secrets": {allowed: readers, ok: 200, prep: none},
		"PUT /api/v1/tenants/{tenant}/secrets/{name}": {allowed: admins, ok: 200, prep: func(e *env, tn *tenantFx) map[string]string { return pv("name", newSecret(e, tn)) },
			body: func(e *env, tn *tenantFx) any { return map[string]any{"value": "new"} }},
		"POST /api/v1/tenants/{tenant}/secrets/{name}/rotate": {allowed: admins, ok: 200, prep: func(e *env, tn *tenantFx) map[string]string { return pv("name", newSecret(e, tn)) },
			body: func(e *env, tn *tenantFx) any { return map[string]any{"value": "new"} }},
		"DELETE /api/v1/tenants/{tenant}/secrets/{name}": {allowed: admins, ok: 204, prep: func(e *env, tn *tenantFx) map[string]string { return pv("name", newSecret(e, tn)) }},

		"GET /api/v1/tenants/{tenant}/ip-acls": {allowed: admins, ok: 200, prep: none},
		"POST /api/v1/tenants/{tenant}/ip-acls": {allowed: admins, ok: 201, prep: none,
			body: func(e *env, tn *tenantFx) any { return map[string]any{"cidr": "127.0.0.0/8"} }},
		"DELETE /api/v1/tenants/{tenant}/ip-acls/{acl}": {allowed: admins, ok: 204, prep: func(e *env, tn *tenantFx) map[string]string {
			// 0.0.0.0/0 so that the entry never locks the fixture out.
			return pv("acl", e.must(201, e.do("POST", tn.path("/ip-acls"), e.super, map[string]any{"cidr": "0.0.0.0/0"})).json(e.t)["id"].(string))
		}},

		"GET /api/v1/tenants/{tenant}/audit": {allowed: admins, ok: 200, prep: none},
		"GET /api/v1/tenants/{tenant}/logs":  {allowed: readers, ok: 200, prep: none},

		"GET /api/v1/agent/policy": {allowed: agentK, ok: 200, prep: none, otherStatus: 200},
		// The other tenant's secret, referenced by that tenant's policy only.
		"GET /api/v1/agent/secrets/{name}": {allowed: agentK, ok: 200, prep: func(e *env, tn *tenantFx) map[string]string { return pv("name", "key-"+tn.name) }},
		"POST /api/v1/agent/heartbeat":     {allowed: agentK, ok: 200, prep: none, otherStatus: 200, body: func(e *env, tn *tenantFx) any { return map[string]any{"status": "running"} }},
		"POST /api/v1/agent/logs": {allowed: agentK, ok: 202, prep: none, otherStatus: 202,
			body: func(e *env, tn *tenantFx) any {
				return map[string]any{"entries": []any{map[string]any{"type": "http"}}}
			}},
	}
}

// matrixTenant adds what the agent routes need: a tenant-wide policy whose
// credential references the tenant's secret key-<name>.
func matrixTenant(e *env, name string) *tenantFx {
	f := e.tenant(name)
	e.must(201, e.do("PUT", f.path("/secrets/key-"+name), f.admin, map[string]any{"value": "value-of-" + name}))
	e.must(201, e.do("POST", f.path("/policies"), f.admin, map[string]any{"entry": map[string]any{
		"domain": "api." + name + ".example", "credential": map[string]any{"header": "Authorization", "secret": "key-" + name}}}))
	return f
}

func TestAuthorizationMatrix(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		specs := matrixSpecs()
		// Every route has a matrix entry, and every entry a route.
		seen := map[string]bool{}
		for _, rt := range e.srv.Routes() {
			k := rt.Method + " " + rt.Pattern
			seen[k] = true
			if rt.Kinds == nil {
				continue
			}
			if _, ok := specs[k]; !ok {
				t.Errorf("route %s has no authorization matrix entry", k)
			}
			if sp, ok := specs[k]; ok && !slices.Equal(sp.allowed, rt.Kinds) {
				t.Errorf("route %s: table allows %v, matrix expects %v", k, rt.Kinds, sp.allowed)
			}
		}
		for k := range specs {
			if !seen[k] {
				t.Errorf("matrix entry %s has no route", k)
			}
		}
		a, b := matrixTenant(e, "alpha"), matrixTenant(e, "beta")
		rc := newResponseChecker(t, e)
		for _, rt := range e.srv.Routes() {
			if rt.Kinds == nil {
				continue
			}
			k := rt.Method + " " + rt.Pattern
			sp := specs[k]
			for _, kind := range kinds {
				for _, target := range []string{"own", "other"} {
					own, other := a, b
					if sp.fresh {
						own, other = e.tenant(fmt.Sprintf("f%d", seq())), e.tenant(fmt.Sprintf("f%d", seq()))
					}
					tn := own
					if target == "other" {
						tn = other
					}
					tok := e.super
					if kind != store.KindSuperadmin {
						tok = own.token(kind)
					}
					vals := sp.prep(e, tn)
					path := strings.ReplaceAll(rt.Pattern, "{tenant}", tn.id)
					for n, v := range vals {
						path = strings.ReplaceAll(path, "{"+n+"}", v)
					}
					var body any
					if sp.body != nil {
						body = sp.body(e, tn)
					}
					want := sp.ok
					hasTenant := strings.Contains(rt.Pattern, "{tenant}")
					switch {
					case hasTenant && kind != store.KindSuperadmin && target == "other":
						want = http.StatusNotFound
					case !slices.Contains(sp.allowed, kind):
						want = http.StatusForbidden
					case !hasTenant && target == "other":
						want = sp.otherStatus
						if want == 0 {
							want = http.StatusNotFound
						}
					}
					r := e.do(rt.Method, path, tok, body)
					if r.status != want {
						t.Errorf("%s as %s on %s tenant: status %d, want %d: %s", k, kind, target, r.status, want, r.body)
					}
					if err := rc.check(rt.Method, rt.Pattern, r); err != nil {
						t.Errorf("%s as %s on %s tenant: answer does not match the OpenAPI document: %v\n%s", k, kind, target, err, r.body)
					}
					if r.header.Get("X-Request-Id") == "" {
						t.Errorf("%s: no X-Request-Id", k)
					}
					if r.status >= 400 {
						m := r.json(t)
						if m["error"] == "" || m["message"] == "" || m["request_id"] != r.header.Get("X-Request-Id") {
							t.Errorf("%s: error body %s", k, r.body)
						}
					}
				}
			}
		}
	})
}

// TestOtherTenantLooksMissing: for every tenant route, another tenant's
// object and a missing one give byte-identical answers (apart from the
// request id), so existence does not leak.
func TestOtherTenantLooksMissing(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		specs := matrixSpecs()
		a, b := matrixTenant(e, "alpha"), matrixTenant(e, "beta")
		for _, rt := range e.srv.Routes() {
			if !strings.Contains(rt.Pattern, "{tenant}") || specs[rt.Method+" "+rt.Pattern].fresh {
				continue
			}
			sp := specs[rt.Method+" "+rt.Pattern]
			vals := sp.prep(e, b)
			other := strings.ReplaceAll(rt.Pattern, "{tenant}", b.id)
			missing := strings.ReplaceAll(rt.Pattern, "{tenant}", "00000000000000000000000000000000")
			for n, v := range vals {
				other = strings.ReplaceAll(other, "{"+n+"}", v)
				missing = strings.ReplaceAll(missing, "{"+n+"}", v)
			}
			var body any
			if sp.body != nil {
				body = sp.body(e, b)
			}
			r1 := e.do(rt.Method, other, a.admin, body)
			r2 := e.do(rt.Method, missing, a.admin, body)
			strip := func(r resp) string {
				m := r.json(t)
				delete(m, "request_id")
				return fmt.Sprint(r.status, m)
			}
			if r1.status != 404 || strip(r1) != strip(r2) {
				t.Errorf("%s %s: other tenant %s vs missing %s", rt.Method, rt.Pattern, strip(r1), strip(r2))
			}
		}
	})
}
