package api

import (
	"testing"
	"time"
)

// FuzzDecoders feeds arbitrary bytes to every request decoder and its
// checks: they must return an error or a value, never panic.
func FuzzDecoders(f *testing.F) {
	for _, s := range []string{
		`{"name":"acme"}`, `{"kind":"agent","name":"x","agent_id":"a","expires_at":"2030-01-01T00:00:00Z"}`,
		`{"disabled":false,"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"agent_id":"a","entry":{"domain":"*.x.example","alias":"a","timeout":30,"egress_limit":"1.5GiB","allowed_paths":["/a/*","/b*"],"denied_paths":["/"],"credential":{"header":"A","format":"B {value}","env":"E"}},"enabled":true}`,
		`{"value":"v"}`, `{"cidr":"::1/128","description":"d"}`, `{"command":"wipe","wipe_workspace":true}`,
		`{"status":"running","metrics":{"a":[1,2]},"command_results":[{"id":"i","status":"succeeded","result":"r"}]}`,
		`{"entries":[{"ts":"2026-01-01T00:00:00.5Z","type":"dns","tenant_id":"x"},{}]}`,
		`{"entry":{"domain":"a","rate_limit":{"requests_per_minute":-1}}}`, `{"entries":[1,"x",null,[]]}`,
		`{"metrics":{"a":1}  }`, `{"entry":{"domain":"xn--"}}`, `{"cidr":"1.2.3.4/33"}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		var a createTenantReq
		if decodeBytes(b, &a) == nil {
			a.check()
		}
		var tk createTokenReq
		if decodeBytes(b, &tk) == nil {
			tk.check(now, false)
			tk.check(now, true)
		}
		var ut updateTokenReq
		if decodeBytes(b, &ut) == nil {
			ut.check()
		}
		var ag createAgentReq
		if decodeBytes(b, &ag) == nil {
			ag.check()
		}
		var p policyReq
		if decodeBytes(b, &p) == nil {
			if d, err := p.check(); err == nil && d.Domain == "" {
				t.Fatalf("valid entry without a domain: %s", b)
			}
		}
		var sr secretReq
		if decodeBytes(b, &sr) == nil {
			sr.check()
		}
		var acl aclReq
		if decodeBytes(b, &acl) == nil {
			acl.check()
		}
		var cr commandReq
		if decodeBytes(b, &cr) == nil {
			cr.check()
		}
		var hb heartbeatReq
		if decodeBytes(b, &hb) == nil {
			hb.check()
		}
		var lr logsReq
		if decodeBytes(b, &lr) == nil {
			es, err := lr.check(DefaultMaxLogBatch, "t", "a", now)
			if err == nil {
				for _, e := range es {
					if e.TenantID != "t" || e.AgentID != "a" {
						t.Fatalf("entry owner changed: %+v", e)
					}
				}
			}
		}
	})
}
