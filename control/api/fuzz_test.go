package api_test

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRequestBodies sends arbitrary bodies to every endpoint that takes
// one, as the most privileged token of the right kind: the answer is never
// a 500 and the server never panics.
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"x"}`, `{"kind":"dev","name":"n","expires_at":"2030-01-01T00:00:00Z"}`, `{"disabled":true}`,
		`{"entry":{"domain":"a.example","credential":{"header":"X","secret":"k"},"rate_limit":{"requests_per_minute":1}}}`,
		`{"entry":{"domain":"*.x.example","timeout":"1s","egress_limit":"1GiB","ports":[1,65535]},"enabled":false}`,
		`{"value":"v"}`, `{"cidr":"10.0.0.0/8"}`, `{"command":"wipe","wipe_workspace":true}`,
		`{"status":"ok","metrics":{"a":1},"command_results":[{"id":"x","status":"failed"}]}`,
		`{"entries":[{"ts":"2026-01-01T00:00:00Z","type":"http","agent":"x"}]}`,
		``, `null`, `[]`, `{"entry":null}`, `{"entry":{"domain":"\u0000"}}`, `{"metrics":"x"}`, `{"entries":[null]}`,
		`{"value":null}`, `{}{}`, `{"name":1e999}`, strings.Repeat("[", 10000),
	} {
		f.Add(s)
	}
	e := newEnv(f, "sqlite:"+f.TempDir()+"/fuzz.db")
	a := e.tenant("alpha")
	h := e.srv.Handler()
	type target struct{ method, path, token string }
	var targets []target
	for _, rt := range e.srv.Routes() {
		if rt.Body == nil {
			continue
		}
		tok := e.super
		if strings.HasPrefix(rt.Pattern, "/api/v1/agent/") {
			tok = a.agent
		}
		p := strings.NewReplacer("{tenant}", a.id, "{agent}", a.agentID, "{policy}", "p", "{token}", a.adminID, "{name}", "k").Replace(rt.Pattern)
		targets = append(targets, target{rt.Method, p, tok})
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, tg := range targets {
			req := httptest.NewRequest(tg.method, tg.path, bytes.NewReader([]byte(body)))
			req.RemoteAddr = "127.0.0.1:1234"
			req.Header.Set("Authorization", "Bearer "+tg.token)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %s with %q: %d %s", tg.method, tg.path, body, rec.Code, rec.Body)
			}
		}
	})
}
