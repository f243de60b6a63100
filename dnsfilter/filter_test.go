package dnsfilter

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const gatewayPolicy = `
dns:
  cache_ttl: 300
domains:
  - domain: allowed.test
    alias: allowed
  - domain: "*.wild.test"
  - domain: short.test
  - domain: nx.test
`

func TestGatewayMode(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			tests := []struct {
				name    string
				qname   string
				qtype   uint16
				rcode   int
				answer  []string
				ede     string // substring of the EDE text; "" = no EDE
				errCode string
				dec     string
			}{
				{"allowed A is the gateway", "allowed.test.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.209.0.1"}, "", "", audit.Allow},
				{"case-insensitive, 0x20", "AlLoWeD.TeSt.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.209.0.1"}, "", "", audit.Allow},
				{"wildcard subdomain", "api.wild.test.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.209.0.1"}, "", "", audit.Allow},
				{"suffix trick", "allowed.test.evil.test.", dns.TypeA, dns.RcodeNameError, nil, "not in the policy", "destination_not_allowed", audit.Deny},
				{"wildcard needs a dot", "evilwild.test.", dns.TypeA, dns.RcodeNameError, nil, "not in the policy", "destination_not_allowed", audit.Deny},
				{"wildcard excludes apex", "wild.test.", dns.TypeA, dns.RcodeNameError, nil, "not in the policy", "destination_not_allowed", audit.Deny},
				{"AAAA empty", "allowed.test.", dns.TypeAAAA, dns.RcodeSuccess, nil, "", "", audit.Allow},
				{"HTTPS empty", "allowed.test.", dns.TypeHTTPS, dns.RcodeSuccess, nil, "", "", audit.Allow},
				{"SVCB empty", "allowed.test.", dns.TypeSVCB, dns.RcodeSuccess, nil, "", "", audit.Allow},
				{"CNAME empty in gateway mode", "allowed.test.", dns.TypeCNAME, dns.RcodeSuccess, nil, "", "", audit.Allow},
				{"disallowed name", "evil.test.", dns.TypeA, dns.RcodeNameError, nil, "evil.test is not in the policy's domains", "destination_not_allowed", audit.Deny},
				{"disallowed AAAA", "evil.test.", dns.TypeAAAA, dns.RcodeNameError, nil, "not in the policy", "destination_not_allowed", audit.Deny},
				{"allowed but nonexistent upstream", "nx.test.", dns.TypeA, dns.RcodeNameError, nil, "", "", audit.Allow},
				{"alias", "allowed.devbox.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.209.0.1"}, "", "", audit.Allow},
				{"alias AAAA empty", "allowed.devbox.local.", dns.TypeAAAA, dns.RcodeSuccess, nil, "", "", audit.Allow},
				{"unknown alias", "nope.devbox.local.", dns.TypeA, dns.RcodeNameError, nil, `no policy entry has alias "nope"`, "destination_not_allowed", audit.Deny},
				{"TXT refused", "allowed.test.", dns.TypeTXT, dns.RcodeRefused, nil, "query type TXT is not served", "query_type_refused", audit.Deny},
				{"NULL refused", "allowed.test.", dns.TypeNULL, dns.RcodeRefused, nil, "NULL is not served", "query_type_refused", audit.Deny},
				{"ANY refused", "allowed.test.", dns.TypeANY, dns.RcodeRefused, nil, "ANY is not served", "query_type_refused", audit.Deny},
				{"MX refused", "allowed.test.", dns.TypeMX, dns.RcodeRefused, nil, "MX is not served", "query_type_refused", audit.Deny},
				{"AXFR refused", "allowed.test.", dns.TypeAXFR, dns.RcodeRefused, nil, "AXFR is not served", "query_type_refused", audit.Deny},
				{"invalid name", "a\\000b.allowed.test.", dns.TypeA, dns.RcodeNameError, nil, "not a valid host name", "destination_not_allowed", audit.Deny},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					r := h.ask(t, proto, tc.qname, tc.qtype)
					if r.Rcode != tc.rcode {
						t.Fatalf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
					}
					if got := answers(r); !slices.Equal(got, tc.answer) {
						t.Fatalf("answer = %q, want %q", got, tc.answer)
					}
					if len(r.Question) != 1 || r.Question[0].Name != tc.qname {
						t.Fatalf("question = %v, want %s echoed as asked", r.Question, tc.qname)
					}
					e := ede(r)
					switch {
					case tc.ede == "" && e != nil:
						t.Fatalf("unexpected EDE %v", e)
					case tc.ede != "" && e == nil:
						t.Fatal("no EDE")
					case tc.ede != "" && (e.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.Contains(e.ExtraText, tc.ede)):
						t.Fatalf("EDE = %d %q, want Blocked containing %q", e.InfoCode, e.ExtraText, tc.ede)
					}
					ev := h.ev.last(t)
					if ev.Type != "dns" || ev.Decision != tc.dec || ev.Error != tc.errCode || ev.Agent != "agent-1" ||
						ev.QType != dns.TypeToString[tc.qtype] || ev.RCode != dns.RcodeToString[tc.rcode] || ev.Reason == "" {
						t.Fatalf("event = %+v", ev)
					}
					if !slices.Equal(ev.Answer, tc.answer) {
						t.Fatalf("event answer = %q, want %q", ev.Answer, tc.answer)
					}
				})
			}
		})
	}
	// Only allowed names of the forwarded types reached the upstream.
	for _, q := range h.up.asked() {
		if !strings.HasPrefix(q, "allowed.test. A") && !strings.HasPrefix(q, "api.wild.test. A") && !strings.HasPrefix(q, "nx.test. A") {
			t.Errorf("upstream was asked %q", q)
		}
	}
}

const upstreamPolicy = `
dns:
  answer: upstream
domains:
  - domain: allowed.test
  - domain: private.test
  - domain: mixed.test
  - domain: cname-bad.test
  - domain: cname-ok.test
  - domain: many.test
  - domain: loop.test
  - domain: loop2.test
  - domain: extra.test
  - domain: lan.test
    allow_private: true
`

func TestUpstreamMode(t *testing.T) {
	h := startFilter(t, upstreamPolicy, func(c *Config) { c.Gateway = netip.Addr{} })
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		answer  []string
		ede     string
		errCode string
	}{
		{"real address", "allowed.test.", dns.TypeA, dns.RcodeSuccess, []string{"A 93.184.216.34"}, "", ""},
		{"AAAA still empty", "allowed.test.", dns.TypeAAAA, dns.RcodeSuccess, nil, "", ""},
		{"private removed", "private.test.", dns.TypeA, dns.RcodeNameError, nil, "forbidden addresses 10.0.0.5 (private)", "forbidden_address"},
		{"forbidden removed, public kept", "mixed.test.", dns.TypeA, dns.RcodeSuccess, []string{"A 93.184.216.34"}, "", ""},
		{"CNAME to disallowed name does not leak", "cname-bad.test.", dns.TypeA, dns.RcodeNameError, nil, "alias (CNAME) of evil.test", "destination_not_allowed"},
		{"CNAME query to disallowed target", "cname-bad.test.", dns.TypeCNAME, dns.RcodeNameError, nil, "evil.test", "destination_not_allowed"},
		{"CNAME to allowed name", "cname-ok.test.", dns.TypeA, dns.RcodeSuccess, []string{"CNAME allowed.test", "A 93.184.216.34"}, "", ""},
		{"CNAME query to allowed target", "cname-ok.test.", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME allowed.test"}, "", ""},
		{"CNAME loop ends without an address", "loop.test.", dns.TypeA, dns.RcodeSuccess, []string{"CNAME loop2.test", "CNAME loop.test"}, "", ""},
		{"records for other names are dropped", "extra.test.", dns.TypeA, dns.RcodeSuccess, []string{"A 93.184.216.37"}, "", ""},
		{"alias needs a gateway", "x.devbox.local.", dns.TypeA, dns.RcodeNameError, nil, "no policy entry has alias", "destination_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.ask(t, "udp", tc.qname, tc.qtype)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := answers(r); !slices.Equal(got, tc.answer) {
				t.Fatalf("answer = %q, want %q", got, tc.answer)
			}
			e := ede(r)
			if (tc.ede == "") != (e == nil) || e != nil && !strings.Contains(e.ExtraText, tc.ede) {
				t.Fatalf("EDE = %v, want %q", e, tc.ede)
			}
			if ev := h.ev.last(t); ev.Error != tc.errCode {
				t.Fatalf("event error = %q, want %q (%+v)", ev.Error, tc.errCode, ev)
			}
		})
	}
}

func TestAllowPrivate(t *testing.T) {
	h := startFilter(t, `
dns: {answer: upstream}
domains:
  - {domain: private.test, allow_private: true}
`)
	r := h.ask(t, "udp", "private.test.", dns.TypeA)
	if got := answers(r); !slices.Equal(got, []string{"A 10.0.0.5"}) {
		t.Fatalf("answer = %q", got)
	}
}

func TestTruncation(t *testing.T) {
	h := startFilter(t, upstreamPolicy)
	// No EDNS0: 512 bytes at most over UDP, so 100 A records set TC.
	m := new(dns.Msg)
	m.SetQuestion("many.test.", dns.TypeA)
	r := h.send(t, "udp", m)
	if !r.Truncated {
		t.Fatalf("UDP reply without EDNS0 not truncated (%d answers)", len(r.Answer))
	}
	r.Compress = true
	if r.Len() > 512 {
		t.Fatalf("UDP reply is %d bytes", r.Len())
	}
	// EDNS0 with a 4096-byte buffer: capped at 1232, still too small for 1600+ bytes.
	r = h.ask(t, "udp", "many.test.", dns.TypeA)
	r.Compress = true
	if !r.Truncated || r.Len() > 1232 {
		t.Fatalf("EDNS0 UDP reply: TC=%v, %d bytes", r.Truncated, r.Len())
	}
	// TCP has the whole answer.
	r = h.ask(t, "tcp", "many.test.", dns.TypeA)
	if r.Truncated || len(r.Answer) != 100 {
		t.Fatalf("TCP reply: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
}

func TestFailover(t *testing.T) {
	// A dead first upstream: a UDP port nothing listens on, and a TCP one.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	// A silent one: it reads and never answers (a timeout, not a refusal).
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	good := startUpstream(t).addr
	h2 := startFilterWith(t, gatewayPolicy, []netip.AddrPort{dead, netip.MustParseAddrPort(silent.LocalAddr().String()), good})
	for _, proto := range []string{"udp", "tcp"} {
		r := h2.ask(t, proto, "allowed.test.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s: %v", proto, r)
		}
	}
	// All dead: SERVFAIL with an EDE and an upstream_error event.
	h3 := startFilterWith(t, gatewayPolicy, []netip.AddrPort{dead})
	r := h3.ask(t, "udp", "allowed.test.", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure || ede(r) == nil {
		t.Fatalf("all upstreams dead: %v", r)
	}
	if ev := h3.ev.last(t); ev.Error != "upstream_error" || ev.RCode != "SERVFAIL" {
		t.Fatalf("event = %+v", ev)
	}
}

// startFilterWith starts a filter whose upstreams are ups (the harness's own
// upstream is started but not used).
func startFilterWith(t *testing.T, yaml string, ups []netip.AddrPort) *harness {
	return startFilter(t, yaml, func(c *Config) {
		c.Upstreams = ups
		c.ResolverOptions = resolver.Options{Timeout: 200 * time.Millisecond}
	})
}

func TestCache(t *testing.T) {
	h := startFilter(t, `
dns: {cache_ttl: 60, answer: upstream}
domains:
  - domain: allowed.test
  - domain: short.test
  - domain: nx.test
`)
	// Three askers, one upstream query; the TTL is capped at cache_ttl.
	for i := 0; i < 3; i++ {
		r := h.ask(t, []string{"udp", "tcp", "udp"}[i], []string{"allowed.test.", "ALLOWED.test.", "allowed.TEST."}[i], dns.TypeA)
		if len(r.Answer) != 1 || r.Answer[0].Header().Ttl > 60 {
			t.Fatalf("answer %v", r.Answer)
		}
	}
	if n := h.up.queries.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}
	// The TTL counts down with the clock.
	h.clock.Add(20 * time.Second)
	r := h.ask(t, "udp", "allowed.test.", dns.TypeA)
	if ttl := r.Answer[0].Header().Ttl; ttl != 40 {
		t.Fatalf("TTL after 20s = %d, want 40", ttl)
	}
	// Past the cap, the upstream is asked again.
	h.clock.Add(41 * time.Second)
	h.ask(t, "udp", "allowed.test.", dns.TypeA)
	if n := h.up.queries.Load(); n != 2 {
		t.Fatalf("upstream saw %d queries after expiry, want 2", n)
	}
	// An upstream TTL below the cap is honoured.
	r = h.ask(t, "udp", "short.test.", dns.TypeA)
	if ttl := r.Answer[0].Header().Ttl; ttl != 5 {
		t.Fatalf("short TTL = %d, want 5", ttl)
	}
	h.clock.Add(6 * time.Second)
	h.ask(t, "udp", "short.test.", dns.TypeA)
	if n := h.up.queries.Load(); n != 4 {
		t.Fatalf("upstream saw %d queries, want 4 (short.test expired)", n)
	}
	// Negative answers are cached for the SOA's negative TTL.
	h.ask(t, "udp", "nx.test.", dns.TypeA)
	h.ask(t, "udp", "nx.test.", dns.TypeA)
	if n := h.up.queries.Load(); n != 5 {
		t.Fatalf("upstream saw %d queries, want 5 (NXDOMAIN cached)", n)
	}
	if v := h.metric(t, "cagent_dns_cache_lookups_total", "result", "hit"); v < 4 {
		t.Fatalf("cache hits metric = %v", v)
	}
}

func TestCacheBounded(t *testing.T) {
	c := newCache(32, cacheBytes)
	now := time.Now()
	for i := 0; i < 1000; i++ {
		c.put(cacheKey{name: string(rune('a'+i%26)) + strings.Repeat("x", i), qtype: 1}, &cached{expires: now.Add(time.Hour)}, now)
		if c.len() > 32 {
			t.Fatalf("cache grew to %d", c.len())
		}
	}
}

// TestCacheBytesBounded: answers with many records fill the byte bound long
// before the count bound; the estimate stays consistent through
// replacements, expiry and eviction; an answer above 1/16 of the bound is
// not cached at all.
func TestCacheBytesBounded(t *testing.T) {
	answer := func(name string, records int) []dns.RR {
		var rrs []dns.RR
		for i := range records {
			rrs = append(rrs, &dns.A{Hdr: dns.RR_Header{Name: name + ".", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(10, 210, byte(i>>8), byte(i)).To4()})
		}
		return rrs
	}
	const maxBytes = 64 << 10
	c := newCache(4096, maxBytes)
	now := time.Now()
	sum := func() int {
		n := 0
		for _, e := range c.m {
			n += e.cost
		}
		return n
	}
	for i := range 2000 {
		name := fmt.Sprintf("n%d.big.test", i%500) // replacements too
		ttl := time.Hour
		if i%7 == 0 {
			ttl = time.Second // some expire
		}
		c.put(cacheKey{name, dns.TypeA}, &cached{answer: answer(name, 1+i%30), expires: now.Add(ttl)}, now)
		if i%100 == 99 {
			now = now.Add(2 * time.Second)
		}
		if c.bytes > maxBytes || c.bytes != sum() {
			t.Fatalf("after %d puts: %d bytes accounted, %d summed, bound %d", i+1, c.bytes, sum(), maxBytes)
		}
	}
	if c.len() >= 4096 {
		t.Fatalf("%d entries: the byte bound never applied", c.len())
	}
	huge := "huge.big.test"
	c.put(cacheKey{huge, dns.TypeA}, &cached{answer: answer(huge, 200), expires: now.Add(time.Hour)}, now)
	if c.get(cacheKey{huge, dns.TypeA}, now) != nil {
		t.Fatal("an answer above 1/16 of the bound was cached")
	}
}

func TestTunnelling(t *testing.T) {
	h := startFilter(t, `
dns:
  tunneling: {max_label_length: 40, max_name_length: 80}
domains:
  - domain: "*.wild.test"
`)
	tests := []struct {
		name, qname, rule string
	}{
		{"long label", strings.Repeat("a", 41) + ".wild.test.", "dns.tunneling.max_label_length"},
		{"long name", strings.Repeat("abcdefghi.", 8) + "wild.test.", "dns.tunneling.max_name_length"},
		{"high entropy", "mzxw6ytboi4dsnrtgq2dk.wild.test.", "dns.tunneling.max_entropy"},
		{"high entropy, 0x20 case does not matter", "MzXw6YtBoI4dSnRtGq2Dk.wild.test.", "dns.tunneling.max_entropy"},
		{"disallowed names too", strings.Repeat("b", 45) + ".evil.test.", "dns.tunneling.max_label_length"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.ask(t, "udp", tc.qname, dns.TypeA)
			if r.Rcode != dns.RcodeRefused {
				t.Fatalf("rcode = %s", dns.RcodeToString[r.Rcode])
			}
			if e := ede(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.Contains(e.ExtraText, "tunnelling") {
				t.Fatalf("EDE = %v", e)
			}
			if ev := h.ev.last(t); ev.Error != "dns_tunneling_suspected" || ev.Rule != tc.rule || ev.Decision != "deny" {
				t.Fatalf("event = %+v", ev)
			}
		})
	}
	// Ordinary names with long but low-entropy labels pass.
	for _, ok := range []string{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.wild.test.", "a.wild.test.", "deadbeefdeadbeefdeadbeef.wild.test."} {
		if r := h.ask(t, "udp", ok, dns.TypeA); r.Rcode != dns.RcodeSuccess {
			t.Errorf("%s: %s %+v", ok, dns.RcodeToString[r.Rcode], h.ev.last(t))
		}
	}
	if n := h.up.queries.Load(); n != 3 {
		t.Errorf("upstream saw %d queries, want 3: refused names must not leave", n)
	}
}

func TestDistinctNameBudget(t *testing.T) {
	h := startFilter(t, `
dns:
  tunneling: {distinct_names_per_hour: 3}
domains:
  - domain: "*.wild.test"
  - domain: "*.other.test"
`)
	ok := func(name string) {
		t.Helper()
		if r := h.ask(t, "udp", name, dns.TypeA); r.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s: %s (%v) %+v", name, dns.RcodeToString[r.Rcode], ede(r), h.ev.last(t))
		}
	}
	refused := func(name string) {
		t.Helper()
		r := h.ask(t, "udp", name, dns.TypeA)
		if r.Rcode != dns.RcodeRefused {
			t.Fatalf("%s: %s, want REFUSED", name, dns.RcodeToString[r.Rcode])
		}
		if e := ede(r); e == nil || !strings.Contains(e.ExtraText, "more than 3 distinct names under wild.test") {
			t.Fatalf("EDE = %v", e)
		}
	}
	budgetEvents := func() int {
		n := 0
		for _, ev := range h.ev.all() {
			if ev.Action == "budget_exhausted" {
				n++
			}
		}
		return n
	}
	ok("a.wild.test.")
	ok("b.wild.test.")
	h.clock.Add(30 * time.Minute)
	ok("c.wild.test.")
	ok("A.wild.test.") // same name, any case: not a new one
	refused("d.wild.test.")
	refused("e.wild.test.")
	ok("b.wild.test.")  // seen in the window: still resolves (and is refreshed)
	ok("x.other.test.") // another registered domain has its own budget
	ok("a.wild.test.")  // and so on
	if n := budgetEvents(); n != 1 {
		t.Fatalf("%d budget events, want exactly 1", n)
	}
	// The AAAA of a new name is answered locally: it costs nothing.
	if r := h.ask(t, "udp", "z.wild.test.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("AAAA: %s", dns.RcodeToString[r.Rcode])
	}
	// 31 minutes on, a, b and c were last asked for 31 minutes ago: nothing has aged out.
	h.clock.Add(31 * time.Minute)
	refused("d.wild.test.")
	// An hour after their last query the names age out, so new ones fit again.
	h.clock.Add(30 * time.Minute)
	ok("d.wild.test.")
	ok("e.wild.test.")
	ok("f.wild.test.")
	refused("g.wild.test.")
	if n := budgetEvents(); n != 2 {
		t.Fatalf("%d budget events, want 2 (a second exhaustion)", n)
	}
	// A reload does not hand out a fresh budget.
	h.f.SetPolicy(mustPolicy(t, `
dns:
  tunneling: {distinct_names_per_hour: 3}
domains:
  - domain: "*.wild.test"
`))
	refused("h.wild.test.")
	// -1 disables the budget.
	h.f.SetPolicy(mustPolicy(t, `
dns:
  tunneling: {distinct_names_per_hour: -1}
domains:
  - domain: "*.wild.test"
`))
	for _, n := range []string{"g", "h", "i", "j", "k"} {
		ok(n + ".wild.test.")
	}
}

func TestBudgetPerClient(t *testing.T) {
	b := newBudgets()
	now := time.Now()
	for i := 0; i < 5; i++ {
		if !b.admit("10.0.0.1", "x.test", string(rune('a'+i)), 5, now).ok {
			t.Fatal("refused within budget")
		}
	}
	if b.admit("10.0.0.1", "x.test", "z", 5, now).ok {
		t.Fatal("sixth name admitted")
	}
	if !b.admit("10.0.0.2", "x.test", "z", 5, now).ok {
		t.Fatal("another client shares the budget")
	}
	// Sweeping forgets idle clients entirely.
	b.admit("10.0.0.3", "y.test", "q", 5, now.Add(2*time.Hour))
	b.mu.Lock()
	n := len(b.sets)
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d sets after sweep, want 1", n)
	}
}

func TestRateLimit(t *testing.T) {
	h := startFilter(t, `
dns:
  rate_limit: {requests_per_minute: 60, burst_size: 2}
domains:
  - domain: allowed.test
`)
	for i := 0; i < 2; i++ {
		if r := h.ask(t, "udp", "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d: %s", i, dns.RcodeToString[r.Rcode])
		}
	}
	r := h.ask(t, "tcp", "allowed.test.", dns.TypeA)
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("over the limit: %s", dns.RcodeToString[r.Rcode])
	}
	if e := ede(r); e == nil || !strings.Contains(e.ExtraText, "rate limit") {
		t.Fatalf("EDE = %v", e)
	}
	if ev := h.ev.last(t); ev.Error != "rate_limited" || ev.QName != "allowed.test" {
		t.Fatalf("event = %+v", ev)
	}
	h.clock.Add(time.Second)
	if r := h.ask(t, "udp", "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("after refill: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestMalformed(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	// Zero and two questions: REFUSED.
	for _, qs := range [][]dns.Question{nil, {{Name: "allowed.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, {Name: "evil.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}} {
		m := &dns.Msg{MsgHdr: dns.MsgHdr{Id: 7}, Question: qs}
		for _, proto := range []string{"udp", "tcp"} {
			r := h.send(t, proto, m)
			if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
				t.Fatalf("%d questions over %s: %v", len(qs), proto, r)
			}
		}
	}
	// Class CH (version.bind and friends): REFUSED.
	m := new(dns.Msg)
	m.SetQuestion("version.bind.", dns.TypeTXT)
	m.Question[0].Qclass = dns.ClassCHAOS
	if r := h.send(t, "udp", m); r.Rcode != dns.RcodeRefused {
		t.Fatalf("CH: %v", r)
	}
	// A NOTIFY: NOTIMP.
	m = new(dns.Msg)
	m.SetNotify("allowed.test.")
	if r := h.send(t, "udp", m); r.Rcode != dns.RcodeNotImplemented {
		t.Fatalf("NOTIFY: %v", r)
	}
	// EDNS version 1: BADVERS.
	m = new(dns.Msg)
	m.SetQuestion("allowed.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if r := h.send(t, "udp", m); r.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS1: %s", dns.RcodeToString[r.Rcode])
	}
	// Garbage with a header: FORMERR echoing the ID; without one: no reply.
	conn, err := net.Dial("udp", h.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil || r.Id != 0x1234 || r.Rcode != dns.RcodeFormatError || !r.Response {
		t.Fatalf("garbage: %v %v", err, r)
	}
	if ev := h.ev.last(t); ev.Error != "malformed_query" {
		t.Fatalf("event = %+v", ev)
	}
}

func TestNoEDEWithoutEDNS(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	m := new(dns.Msg)
	m.SetQuestion("evil.test.", dns.TypeA)
	r := h.send(t, "udp", m)
	if r.Rcode != dns.RcodeNameError || r.IsEdns0() != nil {
		t.Fatalf("reply to a non-EDNS query: %v", r)
	}
}

func TestReportMode(t *testing.T) {
	h := startFilter(t, `
enforcement: report
dns: {answer: upstream}
domains:
  - domain: allowed.test
`)
	r := h.ask(t, "udp", "evil.test.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || ede(r) != nil {
		t.Fatalf("report mode: %v", r)
	}
	if ev := h.ev.last(t); ev.Decision != "report" || ev.Error != "destination_not_allowed" || !strings.Contains(ev.Reason, "would have been denied") {
		t.Fatalf("event = %+v", ev)
	}
	// Query types stay refused even in report mode: TXT is a tunnel.
	if r := h.ask(t, "udp", "txt.test.", dns.TypeTXT); r.Rcode != dns.RcodeRefused {
		t.Fatalf("TXT in report mode: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestSetPolicy(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	if r := h.ask(t, "udp", "evil.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatal("evil.test allowed before reload")
	}
	h.f.SetPolicy(mustPolicy(t, "domains: [{domain: evil.test}]"))
	if r := h.ask(t, "udp", "evil.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after reload: %v", r)
	}
	if r := h.ask(t, "udp", "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatal("allowed.test still allowed after reload")
	}
	// A policy the filter cannot use is refused; the last good one stays.
	f2, err := New(Config{Policy: mustPolicy(t, "dns: {answer: upstream}"), Upstreams: []netip.AddrPort{h.up.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	gw := mustPolicy(t, "domains: [{domain: allowed.test}]")
	if err := f2.CheckPolicy(gw); err == nil || !strings.Contains(err.Error(), "gateway") {
		t.Fatalf("CheckPolicy = %v", err)
	}
	f2.SetPolicy(gw)
	if f2.Policy().DNS.Answer != "upstream" {
		t.Fatal("unusable policy was applied")
	}
}

func TestConfigValidate(t *testing.T) {
	p := mustPolicy(t, "domains: [{domain: allowed.test}]")
	up := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no policy", Config{}, "Policy is required"},
		{"gateway mode without gateway", Config{Policy: p, Upstreams: up}, "needs a gateway address"},
		{"IPv6 gateway", Config{Policy: p, Upstreams: up, Gateway: netip.MustParseAddr("fd00::1")}, "not an IPv4"},
		{"bad upstream", Config{Policy: p, Gateway: testGateway, Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}}, "invalid upstream"},
		{"unvalidated policy", Config{Policy: &policy.Policy{}, Gateway: testGateway}, "not validated"},
		{"bad cache size", Config{Policy: p, Gateway: testGateway, CacheSize: -5}, "CacheSize"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
	// No upstream anywhere and an unreadable resolv.conf: a clear error.
	_, err := New(Config{Policy: p, Gateway: testGateway, ResolvConf: "/nonexistent/resolv.conf"})
	if err == nil || !strings.Contains(err.Error(), "no dns.upstream") {
		t.Fatalf("New = %v", err)
	}
}

func TestCloseIdempotentAndServeAfterClose(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	h.ask(t, "udp", "allowed.test.", dns.TypeA)
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.f.ServeUDP(pc); err != nil {
		t.Fatal(err)
	}
	// pc was closed by ServeUDP.
	if _, err := pc.WriteTo([]byte{0}, pc.LocalAddr()); err == nil {
		t.Fatal("socket left open")
	}
}

func TestTCPPipelineAndNoReplyToResponses(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	c, err := dns.Dial("tcp", h.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	names := []string{"allowed.test.", "evil.test.", "allowed.test."}
	for i, n := range names {
		m := new(dns.Msg)
		m.SetQuestion(n, dns.TypeA)
		m.Id = uint16(100 + i)
		if err := c.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for i := range names {
		r, err := c.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if r.Id != uint16(100+i) || r.Question[0].Name != names[i] {
			t.Fatalf("reply %d out of order: %v", i, r)
		}
	}
	// A response (QR set) gets no reply at all: no reflection loops.
	u, err := net.Dial("udp", h.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	m := new(dns.Msg)
	m.SetQuestion("allowed.test.", dns.TypeA)
	m.Response = true
	b, _ := m.Pack()
	u.Write(b)
	u.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := u.Read(make([]byte, 512)); err == nil {
		t.Fatal("a response was answered")
	}
}
