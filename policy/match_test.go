package policy

import (
	"testing"
)

const matchPolicy = `
domains:
  - domain: example.com
  - domain: "*.example.com"
    read_only: true
  - domain: "*.api.example.com"
    ports: [8443]
  - domain: exact.api.example.com
    alias: exact
  - domain: "*.github.com"
  - domain: xn--bcher-kva.de
    alias: buecher
  - domain: "*.xn--mnchen-3ya.de"
  - domain: disabled.example.com
    enabled: false
  - domain: "*.off.example.org"
    enabled: false
    alias: ""
  - domain: off.example.org
    enabled: false
    alias: off
  - domain: _srv.example.net
`

func TestLookup(t *testing.T) {
	p := mustParse(t, matchPolicy)
	cases := []struct {
		host string
		want string // Domain of the entry, "" for none
	}{
		{"example.com", "example.com"},
		{"EXAMPLE.COM", "example.com"},
		{"Example.Com.", "example.com"},
		{"example.com..", ""},
		{".example.com", ""},
		{"www.example.com", "*.example.com"},
		{"WWW.Example.com.", "*.example.com"},
		{"a.b.c.example.com", "*.example.com"},
		{"api.example.com", "*.example.com"}, // "*.api.example.com" does not cover its apex
		{"v1.api.example.com", "*.api.example.com"},
		{"x.v1.api.example.com", "*.api.example.com"},
		{"exact.api.example.com", "exact.api.example.com"}, // exact beats wildcard
		{"sub.exact.api.example.com", "*.api.example.com"},
		{"github.com", ""}, // *.github.com does not match the apex
		{"api.github.com", "*.github.com"},
		{"evilgithub.com", ""},
		{"github.com.evil.net", ""},
		{"api.github.com.evil.net", ""},
		{"bücher.de", "xn--bcher-kva.de"},
		{"BÜCHER.de.", "xn--bcher-kva.de"},
		{"XN--BCHER-KVA.DE", "xn--bcher-kva.de"},
		{"www.münchen.de", "*.xn--mnchen-3ya.de"},
		{"www.xn--mnchen-3ya.de", "*.xn--mnchen-3ya.de"},
		{"münchen.de", ""},
		{"disabled.example.com", "*.example.com"}, // a disabled entry is as if deleted
		{"a.off.example.org", ""},
		{"off.example.org", ""},
		{"_srv.example.net", "_srv.example.net"},
		{"", ""},
		{".", ""},
		{"example.com:443", ""},
		{"93.184.216.34", ""},
		{"[::1]", ""},
		{"127.1", ""},
		{"0x7f.1", ""},
		{"a b.example.com", ""},
		{"exa\x00mple.com", ""},
		{"xn--zz.example.com", ""}, // invalid punycode
	}
	for _, c := range cases {
		d := p.Lookup(c.host)
		got := ""
		if d != nil {
			got = d.Domain
		}
		if got != c.want {
			t.Errorf("Lookup(%q) = %q, want %q", c.host, got, c.want)
		}
	}
	var nilPolicy *Policy
	if nilPolicy.Lookup("example.com") != nil || nilPolicy.LookupAlias("x.devbox.local") != nil {
		t.Error("nil policy matched")
	}
	if (&Policy{Domains: []Domain{{Domain: "a.com"}}}).Lookup("a.com") != nil {
		t.Error("unvalidated policy matched")
	}
}

func TestLookupAlias(t *testing.T) {
	p := mustParse(t, matchPolicy)
	cases := []struct {
		host string
		want string
	}{
		{"exact.devbox.local", "exact.api.example.com"},
		{"EXACT.DevBox.Local.", "exact.api.example.com"},
		{"buecher.devbox.local", "xn--bcher-kva.de"},
		{"exact", ""}, // a bare alias is not an alias host
		{"a.exact.devbox.local", ""},
		{"devbox.local", ""},
		{".devbox.local", ""},
		{"off.devbox.local", ""}, // disabled
		{"nope.devbox.local", ""},
		{"exact.devbox.local.evil.com", ""},
	}
	for _, c := range cases {
		d := p.LookupAlias(c.host)
		got := ""
		if d != nil {
			got = d.Domain
		}
		if got != c.want {
			t.Errorf("LookupAlias(%q) = %q, want %q", c.host, got, c.want)
		}
	}
	for host, want := range map[string]bool{"x.devbox.local": true, "X.DEVBOX.LOCAL.": true, "devbox.local": false, "x.devbox.locals": false, "devbox.local.evil": false} {
		if IsAliasHost(host) != want {
			t.Errorf("IsAliasHost(%q) = %v", host, !want)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	cases := []struct{ in, want string }{
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"bücher.de", "xn--bcher-kva.de"},
		{"BÜCHER.DE.", "xn--bcher-kva.de"},
		{"xn--bcher-kva.de", "xn--bcher-kva.de"},
		{"a_b.example", "a_b.example"},
		{"localhost", "localhost"},
		{"a.b-c.d", "a.b-c.d"},
		{"123.example.com", "123.example.com"},
		{"example.0x", ""}, // "0x" is a hex number to WHATWG
		{"1x.example", "1x.example"},
		{"example.com..", ""},
		{"", ""},
		{".", ""},
		{"..", ""},
		{"a..b", ""},
		{"-a.com", ""},
		{"a-.com", ""},
		{"a b", ""},
		{"a/b", ""},
		{"a:80", ""},
		{"[::1]", ""},
		{"1.2.3.4", ""},
		{"1.2.3.4.", ""},
		{"127.1", ""},
		{"2130706433", ""},
		{"0x7f000001", ""},
		{"0x7f.0x0.0x0.0x1", ""},
		{"foo.0x", ""},
		{"xn--zz.com", ""},
		{"xn--a.com", ""},
		{string(make([]byte, 64)) + ".com", ""},
		{stringsRepeat("a", 63) + ".com", stringsRepeat("a", 63) + ".com"},
		{stringsRepeat("a", 64) + ".com", ""},
		{stringsRepeat("a.", 126) + "a", stringsRepeat("a.", 126) + "a"}, // 253 characters
		{stringsRepeat("a.", 126) + "ab", ""},
		// UTS 46 maps some code points away (as browsers do): the proxy must
		// dial and present the normalized name, never the raw one.
		{"exa\u200bmple.com", "example.com"},
		{"example\uff0ecom", "example.com"},
	}
	for _, c := range cases {
		got, err := NormalizeHost(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("NormalizeHost(%q) = %q, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func stringsRepeat(s string, n int) string {
	b := make([]byte, 0, len(s)*n)
	for range n {
		b = append(b, s...)
	}
	return string(b)
}

func TestRegisteredDomain(t *testing.T) {
	for in, want := range map[string]string{
		"www.example.com": "example.com", "a.b.example.co.uk": "example.co.uk", "example.com": "example.com",
		"com": "com", "x.test": "x.test", "a.x.test": "x.test", "foo.github.io": "foo.github.io",
	} {
		if got := RegisteredDomain(in); got != want {
			t.Errorf("RegisteredDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseHostPort(t *testing.T) {
	cases := []struct {
		in   string
		def  uint16
		want string
	}{
		{"8.8.8.8", 53, "8.8.8.8:53"},
		{"8.8.8.8:5353", 53, "8.8.8.8:5353"},
		{"::1", 53, "[::1]:53"},
		{"[::1]", 53, "[::1]:53"},
		{"[::1]:54", 53, "[::1]:54"},
		{"[::ffff:1.2.3.4]:53", 53, "1.2.3.4:53"},
		{"127.0.0.1:8081", 0, "127.0.0.1:8081"},
		{"127.0.0.1", 0, ""},
		{"localhost:53", 53, ""},
		{"8.8.8.8:99999", 53, ""},
		{"", 53, ""},
	}
	for _, c := range cases {
		got, err := ParseHostPort(c.in, c.def)
		if c.want == "" {
			if err == nil {
				t.Errorf("ParseHostPort(%q) = %v, want error", c.in, got)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("ParseHostPort(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
	if a, ok := ParseIPHost("[::ffff:10.0.0.1]"); !ok || a.String() != "10.0.0.1" {
		t.Errorf("ParseIPHost mapped = %v %v", a, ok)
	}
	if _, ok := ParseIPHost("example.com"); ok {
		t.Error("ParseIPHost(example.com)")
	}
}

func TestDomainRules(t *testing.T) {
	p := mustParse(t, `
rate_limits: {default: {requests_per_minute: 60}}
egress_limits: {default: 5MiB}
proxy: {timeout: 10s}
domains:
  - domain: plain.com
  - domain: ro.com
    read_only: true
  - domain: ports.com
    ports: [8080]
  - domain: own.com
    rate_limit: {requests_per_minute: 6, burst_size: 2}
    egress_limit: 1KiB
    timeout: 3s
`)
	plain, ro, ports, own := p.Lookup("plain.com"), p.Lookup("ro.com"), p.Lookup("ports.com"), p.Lookup("own.com")
	for _, m := range []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "CONNECT", "get"} {
		if !plain.MethodAllowed(m) {
			t.Errorf("plain %s refused", m)
		}
		want := m == "GET" || m == "HEAD" || m == "OPTIONS"
		if ro.MethodAllowed(m) != want {
			t.Errorf("read_only %s = %v", m, !want)
		}
	}
	for port, want := range map[int]bool{80: true, 443: true, 8080: false, 0: false, 22: false} {
		if plain.PortAllowed(port) != want {
			t.Errorf("default ports %d = %v", port, !want)
		}
	}
	for port, want := range map[int]bool{80: false, 443: false, 8080: true} {
		if ports.PortAllowed(port) != want {
			t.Errorf("ports: [8080] %d = %v", port, !want)
		}
	}
	if r := p.RateLimitFor(plain); r == nil || r.RequestsPerMinute != 60 || r.BurstSize != 10 {
		t.Errorf("default rate %+v", r)
	}
	if r := p.RateLimitFor(own); r.RequestsPerMinute != 6 || r.BurstSize != 2 {
		t.Errorf("own rate %+v", r)
	}
	if p.EgressLimitFor(plain) != 5<<20 || p.EgressLimitFor(own) != 1024 {
		t.Error("egress")
	}
	if p.TimeoutFor(plain).D().Seconds() != 10 || p.TimeoutFor(own).D().Seconds() != 3 {
		t.Error("timeouts")
	}
}
