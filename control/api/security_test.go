package api_test

// Tests written during the adversarial review of the control plane
// (docs/control-plane.md, "Security review"): each failed before its fix.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/control/store"
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
