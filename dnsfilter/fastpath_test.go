package dnsfilter

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cagent-dev/cagent/audit"
)

// The fast path must give exactly the full path's answer.
func TestFastPathMatchesFullPath(t *testing.T) {
	for _, mode := range []string{"gateway", "upstream"} {
		t.Run(mode, func(t *testing.T) {
			h := startFilter(t, `
dns: {answer: `+mode+`}
domains:
  - {domain: allowed.test, alias: allowed}
  - {domain: cname-ok.test}
  - {domain: nx.test}
  - {domain: mixed.test}
`)
			queries := []struct {
				name  string
				qtype uint16
			}{
				{"allowed.test.", dns.TypeA}, {"cname-ok.test.", dns.TypeA}, {"allowed.test.", dns.TypeAAAA},
				{"allowed.test.", dns.TypeHTTPS}, {"allowed.devbox.local.", dns.TypeA}, {"nx.test.", dns.TypeA},
				{"mixed.test.", dns.TypeA}, {"cname-ok.test.", dns.TypeCNAME},
			}
			client := netip.MustParseAddr("127.0.0.1")
			for _, qq := range queries {
				for _, edns := range []bool{false, true} {
					mk := func(name string) []byte {
						m := new(dns.Msg)
						m.SetQuestion(name, qq.qtype)
						m.RecursionDesired = !edns
						if edns {
							m.SetEdns0(1232, false)
						}
						w, err := m.Pack()
						if err != nil {
							t.Fatal(err)
						}
						return w
					}
					// Over the sockets: the first query takes the full path,
					// the second (a cache hit) makes a template, the third,
					// any case, uses it.
					before := h.f.fastN.Load()
					for _, proto := range []string{"udp", "tcp", "udp"} {
						var m dns.Msg
						if err := m.Unpack(mk(qq.name)); err != nil {
							t.Fatal(err)
						}
						h.send(t, proto, &m)
					}
					if h.f.fastN.Load() == before {
						t.Fatalf("%s %s edns=%v: fast path never used", qq.name, dns.TypeToString[qq.qtype], edns)
					}
					// The very same bytes from both paths.
					mixed := strings.ToUpper(qq.name[:3]) + qq.name[3:]
					wire := mk(mixed)
					full := h.f.handle(client, "udp", wire)
					fast := h.f.fast(client, "127.0.0.1", wire, nil, nil)
					if fast == nil {
						t.Fatalf("%s %s edns=%v: no fast answer", qq.name, dns.TypeToString[qq.qtype], edns)
					}
					if !bytes.Equal(full, fast) {
						var a, b dns.Msg
						a.Unpack(full)
						b.Unpack(fast)
						t.Fatalf("fast reply differs:\nfull %v\nfast %v", &a, &b)
					}
				}
			}
			// One event per query, fast ones included, with client and time.
			evs := h.ev.all()
			if len(evs) != len(queries)*2*5 {
				t.Fatalf("%d events for %d queries", len(evs), len(queries)*10)
			}
			for _, ev := range evs {
				if ev.Client != "127.0.0.1" || ev.TS.IsZero() || ev.QName == "" {
					t.Fatalf("event %+v", ev)
				}
			}
		})
	}
}

func TestFastPathTTLAndInvalidation(t *testing.T) {
	h := startFilter(t, "dns: {answer: upstream, cache_ttl: 100}\ndomains: [{domain: allowed.test}]\n")
	h.ask(t, "udp", "allowed.test.", dns.TypeA)
	h.ask(t, "udp", "allowed.test.", dns.TypeA) // a cache hit: makes the template
	h.clock.Add(30 * time.Second)
	r := h.ask(t, "udp", "allowed.test.", dns.TypeA)
	if h.f.fastN.Load() != 1 || r.Answer[0].Header().Ttl != 70 {
		t.Fatalf("fast=%d ttl=%d", h.f.fastN.Load(), r.Answer[0].Header().Ttl)
	}
	// Expired: the full path asks upstream again.
	h.clock.Add(71 * time.Second)
	h.ask(t, "udp", "allowed.test.", dns.TypeA)
	if n := h.up.queries.Load(); n != 2 {
		t.Fatalf("upstream saw %d queries", n)
	}
	// A policy change retires every template.
	h.f.SetPolicy(mustPolicy(t, "dns: {answer: upstream}\ndomains: [{domain: other.test}]\n"))
	if r := h.ask(t, "udp", "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("after the policy change: %v", r)
	}
}

// A template made for one client must not let another past its budget, and
// the one budget event must still be emitted.
func TestFastPathBudgetPerClient(t *testing.T) {
	h := startFilter(t, "dns: {tunneling: {distinct_names_per_hour: 1}}\ndomains: [{domain: '*.wild.test'}]\n")
	from := func(src, name string) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.SetEdns0(1232, false)
		c := &dns.Client{Net: "udp", Timeout: 3 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
		r, _, err := c.Exchange(m, h.udp)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for range 2 {
		if r := from("127.0.0.2", "a.wild.test."); r.Rcode != dns.RcodeSuccess {
			t.Fatal(r)
		}
	}
	if r := from("127.0.0.1", "b.wild.test."); r.Rcode != dns.RcodeSuccess {
		t.Fatal(r)
	}
	// a.wild.test has a template now; 127.0.0.1 has spent its budget on b.
	if r := from("127.0.0.1", "a.wild.test."); r.Rcode != dns.RcodeRefused {
		t.Fatalf("over budget through a template: %v", r)
	}
	n := 0
	for _, ev := range h.ev.all() {
		if ev.Action == "budget_exhausted" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d budget events", n)
	}
	if r := from("127.0.0.2", "a.wild.test."); r.Rcode != dns.RcodeSuccess || h.f.fastN.Load() != 1 {
		t.Fatalf("owner of the name: %v fast=%d", r, h.f.fastN.Load())
	}
}

func TestParseFastRejects(t *testing.T) {
	ok := new(dns.Msg)
	ok.SetQuestion("a.test.", dns.TypeA)
	wire, _ := ok.Pack()
	if _, good := parseFast(wire, nil); !good {
		t.Fatal("plain query rejected")
	}
	mods := map[string]func(m *dns.Msg){
		"escape":   func(m *dns.Msg) { m.Question[0].Name = "a\\000.test." },
		"class CH": func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS },
		"opcode":   func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify },
		"response": func(m *dns.Msg) { m.Response = true },
		"cookie": func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		},
		"edns1":  func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) },
		"answer": func(m *dns.Msg) { m.Answer = append(m.Answer, rr("a.test. 1 IN A 1.2.3.4")) },
		"two questions": func(m *dns.Msg) {
			m.Question = append(m.Question, m.Question[0])
		},
	}
	for name, mod := range mods {
		m := new(dns.Msg)
		m.SetQuestion("a.test.", dns.TypeA)
		mod(m)
		w, err := m.Pack()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, good := parseFast(w, nil); good {
			t.Errorf("%s accepted by the fast path", name)
		}
		if _, good := parseFast(append(wire, 0), nil); good {
			t.Error("trailing byte accepted")
		}
	}
}

// TestTemplatesBounded: templates stay within their count and byte bounds,
// with the byte estimate consistent through replacements and restarts.
func TestTemplatesBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply int // bytes of each template's reply
	}{
		{"small replies: the count binds", 40},
		{"large replies: the bytes bind", 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTemplates()
			sawFull := false
			for i := range 3 * maxTemplates {
				key := fmt.Sprintf("n%d.allowed.test", i%(2*maxTemplates))
				ts.add(key, &template{wire: make([]byte, tc.reply), nameOff: []int{12}, ttlOff: []int{40},
					ev: audit.Event{QName: key, Reason: "allowed by the policy entry allowed.test"}})
				sum := 0
				for k, v := range ts.m {
					sum += templateCost(k, v)
				}
				if len(ts.m) > maxTemplates || ts.bytes > templateBytes || ts.bytes != sum {
					t.Fatalf("after %d adds: %d templates, %d bytes accounted, %d summed", i+1, len(ts.m), ts.bytes, sum)
				}
				sawFull = sawFull || len(ts.m) == maxTemplates || ts.bytes+templateCost(key, ts.m[key]) > templateBytes
			}
			if !sawFull {
				t.Fatal("never reached a bound")
			}
		})
	}
}
