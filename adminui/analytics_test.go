package adminui

import (
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
)

func TestComputeAnalytics(t *testing.T) {
	p, err := policy.Parse("t.yaml", []byte(`
rate_limits: {default: {requests_per_minute: 60}}
egress_limits: {default: 1000}
domains:
  - domain: api.example.com
    rate_limit: {requests_per_minute: 10}
  - domain: "*.github.com"
`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ev := []audit.Event{
		{TS: now.Add(-2 * time.Hour), Type: "http", Host: "api.example.com", Decision: "allow", BytesUp: 999},    // outside hour and window
		{TS: now.Add(-30 * time.Minute), Type: "http", Host: "api.example.com", Decision: "allow", BytesUp: 300}, // in hour, outside window
		{TS: now.Add(-30 * time.Second), Type: "http", Host: "api.example.com", Decision: "allow", Status: 200, BytesUp: 100, BytesDown: 1000},
		{TS: now.Add(-20 * time.Second), Type: "connect", Host: "api.example.com", Decision: "deny", Error: "rate_limited"},
		{TS: now.Add(-10 * time.Second), Type: "http", Host: "x.github.com", Decision: "allow", Status: 502, Error: "upstream_error"},
		{TS: now.Add(-5 * time.Second), Type: "http", Host: "evil.example", Decision: "deny", Error: "destination_not_allowed", Reason: "not in policy"},
		{TS: now.Add(-4 * time.Second), Type: "http", Host: "evil.example", Decision: "deny", Error: "destination_not_allowed", Reason: "not in policy"},
		{TS: now.Add(-3 * time.Second), Type: "dns", QName: "evil.example.", Decision: "deny", Error: "destination_not_allowed"},
		{TS: now.Add(-2 * time.Second), Type: "admin", Action: "login", Decision: "deny"}, // not traffic
		{TS: now.Add(time.Hour), Type: "http", Host: "future.example"},                    // clock skew: ignored
	}
	a := ComputeAnalytics(ev, p, now, 15*time.Minute)
	tt := a.Totals
	if tt.Requests != 5 || tt.Denied != 3 || tt.Errors != 1 || tt.BytesUp != 100 || tt.BytesDown != 1000 || tt.DNSQueries != 1 || tt.DNSDenied != 1 {
		t.Errorf("totals %+v", tt)
	}
	if tt.ErrorRate != 0.2 {
		t.Errorf("error rate %v", tt.ErrorRate)
	}
	if a.BucketSeconds != 15 || len(a.Series) != 61 {
		t.Errorf("buckets %d x %ds", len(a.Series), a.BucketSeconds)
	}
	sum := 0
	for _, b := range a.Series {
		sum += b.Requests
	}
	if sum != 5 {
		t.Errorf("series holds %d requests", sum)
	}
	if a.TopDomains[0].Domain != "api.example.com" || a.TopDomains[0].Requests != 2 {
		t.Errorf("top %+v", a.TopDomains)
	}
	if b := a.Blocked[0]; b.Domain != "evil.example" || b.Count != 2 || b.InPolicy || b.Reason != "not in policy" {
		t.Errorf("blocked %+v", a.Blocked)
	}
	var rl *BlockedStats
	for i := range a.Blocked {
		if a.Blocked[i].Error == "rate_limited" {
			rl = &a.Blocked[i]
		}
	}
	if rl == nil || !rl.InPolicy {
		t.Errorf("rate-limited entry %+v", rl)
	}
	lim := map[string]LimitUsage{}
	for _, l := range a.Limits {
		lim[l.Domain] = l
	}
	api := lim["api.example.com"]
	if api.RequestsPerMinute != 10 || api.LastMinute != 2 || api.RateLimited != 1 || api.EgressLimit != 1000 || api.EgressLastHour != 400 {
		t.Errorf("api limits %+v", api)
	}
	if gh := lim["*.github.com"]; gh.RequestsPerMinute != 60 || gh.LastMinute != 1 {
		t.Errorf("github limits %+v", gh)
	}
}

func FuzzReplaceDomains(f *testing.F) {
	f.Add([]byte(basePolicy), "a.example")
	f.Add([]byte("domains: []\n"), "b")
	f.Add([]byte(""), "c")
	f.Add([]byte("- list\n"), "d")
	f.Add([]byte("domains: &a [*a]\n"), "e")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		// The editor trims names and the policy rejects odd ones; the
		// round trip must hold for names that could be valid.
		if strings.TrimFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f || !unicode.IsPrint(r) }) != name || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f || unicode.IsSpace(r) }) {
			return
		}
		ds, err := readDomains(data)
		if err != nil {
			return
		}
		out, err := replaceDomains(data, append(ds, DomainEntry{Domain: name}))
		if err != nil {
			return
		}
		back, err := readDomains(out)
		if err != nil {
			t.Fatalf("re-read: %v\n%s", err, out)
		}
		if len(back) != len(ds)+1 || back[len(back)-1].Domain != name {
			t.Fatalf("round trip lost entries: %d vs %d", len(back), len(ds)+1)
		}
	})
}

func FuzzParseFilter(f *testing.F) {
	f.Add("http,dns", "deny", "Example", "15m", "", "10")
	f.Add("", "", "", "2026-01-01T00:00:00Z", "-5m", "0")
	f.Fuzz(func(t *testing.T, typ, dec, dom, since, until, limit string) {
		q := map[string]string{"type": typ, "decision": dec, "domain": dom, "since": since, "until": until, "limit": limit}
		fl, err := ParseFilter(func(k string) string { return q[k] }, time.Now())
		if err != nil {
			return
		}
		if fl.Limit < 1 || fl.Limit > 5000 {
			t.Fatalf("limit %d", fl.Limit)
		}
		fl.Match(&audit.Event{Type: "http", Host: dom})
	})
}
