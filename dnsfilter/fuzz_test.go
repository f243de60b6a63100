package dnsfilter

import (
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/cagent-dev/cagent/policy"
)

func FuzzName(f *testing.F) {
	for _, s := range []string{
		"example.com.", "a.b.c.", ".", "", "\\000.x.", "a\\.b.c.", "\\", "a\\1", "a\\12", "a\\123.",
		"mzxw6ytboi4dsnrtgq2dk.wild.test.", strings.Repeat("a", 70) + ".", strings.Repeat("ab.", 90),
		"AbCdEfGhIjKlMnOpQrStUvWxYz.example.", "..", "a..b.", "xn--bcher-kva.example.",
	} {
		f.Add(s)
	}
	t := &policy.Tunneling{MaxLabelLength: 63, MaxNameLength: 100, MaxEntropy: 4.0, DistinctNames: 100}
	f.Fuzz(func(tt *testing.T, name string) {
		host, herr := policy.NormalizeHost(name)
		if herr != nil {
			host = ""
		}
		v, bad := checkTunnel(name, host, t)
		if bad && (v.rule == "" || v.reason == "") {
			tt.Fatalf("verdict without rule or reason: %+v", v)
		}
		labels, n, ok := wireLabels(name, nil)
		if ok {
			sum := 0
			for _, l := range labels {
				if l <= 0 {
					tt.Fatalf("empty label in %q", name)
				}
				if l > t.MaxLabelLength && !bad {
					tt.Fatalf("%q: label of %d passed", name, l)
				}
				sum += l + 1
			}
			if n != max(sum-1, 0) {
				tt.Fatalf("%q: length %d, labels %v", name, n, labels)
			}
			if n > t.MaxNameLength && !bad {
				tt.Fatalf("%q: name of %d passed", name, n)
			}
		}
		if host != "" {
			// A normalized host has no escapes: its wire length is its length.
			_, hn, hok := wireLabels(host+".", nil)
			if !hok || hn != len(host) {
				tt.Fatalf("%q: wire length %d, len %d", host, hn, len(host))
			}
		}
		for _, label := range strings.Split(name, ".") {
			e := policy.LabelEntropy(label)
			if e < 0 || e > 8 || math.IsNaN(e) {
				tt.Fatalf("Entropy(%q) = %v", label, e)
			}
			if len(label) > 0 && e > math.Log2(float64(len(label)))+1e-9 {
				tt.Fatalf("Entropy(%q) = %v exceeds log2(len)", label, e)
			}
			if u := policy.LabelEntropy(asciiUpper(label)); math.Abs(u-e) > 1e-9 {
				tt.Fatalf("entropy depends on case: %q %v vs %v", label, e, u)
			}
			if host != "" && len(label) >= policy.MinEntropyLabel && e > t.MaxEntropy && !bad {
				tt.Fatalf("%q: high-entropy label %q passed", name, label)
			}
		}
	})
}

func FuzzQuery(f *testing.F) {
	up := startUpstream(f)
	p, err := policy.Parse("fuzz.yaml", []byte(`
dns:
  rate_limit: {requests_per_minute: 1000000000, burst_size: 1000000}
  tunneling: {distinct_names_per_hour: 50}
domains:
  - domain: allowed.test
    alias: allowed
  - domain: "*.wild.test"
  - domain: many.test
`))
	if err != nil {
		f.Fatal(err)
	}
	flt, err := New(Config{Policy: p, Upstreams: []netip.AddrPort{up.addr}, Gateway: testGateway, ResolvConf: "/nonexistent"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { flt.Close() })
	seed := func(name string, qt uint16, edns bool) {
		m := new(dns.Msg)
		m.SetQuestion(name, qt)
		if edns {
			m.SetEdns0(4096, true)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed("allowed.test.", dns.TypeA, true)
	seed("allowed.test.", dns.TypeAAAA, false)
	seed("x.wild.test.", dns.TypeA, true)
	seed("evil.test.", dns.TypeA, true)
	seed("many.test.", dns.TypeA, false)
	seed("allowed.devbox.local.", dns.TypeA, false)
	seed("allowed.test.", dns.TypeTXT, true)
	seed(strings.Repeat("q", 63)+".wild.test.", dns.TypeA, true)
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
	client := netip.MustParseAddr("10.209.0.2")
	f.Fuzz(func(t *testing.T, wire []byte) {
		if out := flt.fast(client, client.String(), wire, nil, nil); out != nil {
			var r dns.Msg
			if err := r.Unpack(out); err != nil || !r.Response || r.Id != uint16(wire[0])<<8|uint16(wire[1]) || len(out) > 512 {
				t.Fatalf("fast reply %x: %v", out, err)
			}
		}
		for _, proto := range []string{"udp", "tcp"} {
			out := flt.handle(client, proto, wire)
			if out == nil {
				continue
			}
			var r dns.Msg
			if err := r.Unpack(out); err != nil {
				t.Fatalf("%s: reply does not parse: %v", proto, err)
			}
			if !r.Response || len(wire) < 2 || r.Id != uint16(wire[0])<<8|uint16(wire[1]) {
				t.Fatalf("%s: reply header %+v for %x", proto, r.MsgHdr, wire)
			}
			if proto == "udp" && len(out) > serverUDPSize {
				t.Fatalf("udp reply of %d bytes", len(out))
			}
			var req dns.Msg
			if req.Unpack(wire) == nil && req.IsEdns0() == nil && proto == "udp" && len(out) > 512 {
				t.Fatalf("udp reply of %d bytes to a query without EDNS0", len(out))
			}
			// Nothing but the gateway or public addresses is ever answered.
			for _, a := range r.Answer {
				if x, ok := a.(*dns.A); ok && !x.A.Equal(testGateway.AsSlice()) {
					t.Fatalf("answer %v is not the gateway in gateway mode", a)
				}
				if _, ok := a.(*dns.TXT); ok {
					t.Fatalf("TXT answered: %v", a)
				}
			}
		}
	})
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
