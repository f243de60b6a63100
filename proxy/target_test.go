package proxy

import (
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/policy"
)

func TestParseAuthority(t *testing.T) {
	cases := []struct {
		in      string
		defPort int
		host    string
		port    int
		ip      bool
		bad     bool
	}{
		{"example.com:443", 0, "example.com", 443, false, false},
		{"Example.COM.:8443", 0, "example.com", 8443, false, false},
		{"example.com", 80, "example.com", 80, false, false},
		{"example.com", 0, "", 0, false, true},
		{"example.com:", 80, "", 0, false, true},
		{"example.com:0", 0, "", 0, false, true},
		{"example.com:65536", 0, "", 0, false, true},
		{"example.com:+443", 0, "", 0, false, true},
		{"example.com:0443", 0, "example.com", 443, false, false},
		{"10.0.0.1:5432", 0, "10.0.0.1", 5432, true, false},
		{"[::1]:443", 0, "::1", 443, true, false},
		{"[::ffff:127.0.0.1]:443", 0, "127.0.0.1", 443, true, false},
		{"[::1]", 443, "::1", 443, true, false},
		{"::1:443", 0, "", 0, false, true},
		{"[fe80::1%25eth0]:443", 0, "", 0, false, true},
		{"[example.com]:443", 0, "", 0, false, true},
		{"user@example.com:443", 0, "", 0, false, true},
		{"example.com/x:443", 0, "", 0, false, true},
		{"exa mple.com:443", 0, "", 0, false, true},
		{"127.1:443", 0, "", 0, false, true},
		{"2130706433:443", 0, "", 0, false, true},
		{"0x7f.0.0.1:443", 0, "", 0, false, true},
		{"a.0x7f:443", 0, "", 0, false, true},
		{"bücher.de:443", 0, "", 0, false, true}, // clients send punycode
		{"xn--bcher-kva.de:443", 0, "xn--bcher-kva.de", 443, false, false},
		{"-bad.com:443", 0, "", 0, false, true},
		{"a..b:443", 0, "", 0, false, true},
		{"", 443, "", 0, false, true},
		{"api.devbox.local:80", 0, "api.devbox.local", 80, false, false},
		{"echо.test:443", 0, "", 0, false, true},                               // Cyrillic homoglyph, raw
		{"example.com..:443", 0, "", 0, false, true},                           // only one trailing dot
		{"0177.0.0.1:443", 0, "", 0, false, true},                              // octal dotted quad
		{"1.2.3.4.5:443", 0, "", 0, false, true},                               // numeric last label
		{"[::ffff:169.254.169.254]:80", 0, "169.254.169.254", 80, true, false}, // unmapped, then refused as metadata
		{"example.com:443:443", 0, "", 0, false, true},
		{"example.com:44 3", 0, "", 0, false, true},
	}
	for _, c := range cases {
		a, err := parseAuthority(c.in, c.defPort)
		if c.bad {
			if err == nil {
				t.Errorf("%q: accepted as %+v", c.in, a)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if a.host != c.host || a.port != c.port || a.ip.IsValid() != c.ip {
			t.Errorf("%q: got %+v", c.in, a)
		}
	}
}

func mustPolicy(t testing.TB, yaml string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecisionTable(t *testing.T) {
	pol := mustPolicy(t, `
domains:
  - domain: api.example.com
    alias: api
    allowed_paths: ["/v1/*"]
    denied_paths: ["/v1/files*"]
    tls_intercept: true
  - domain: "*.github.com"
    read_only: true
  - domain: db.example.com
    ports: [5432]
  - domain: off.example.com
    enabled: false
ip_ranges:
  - {cidr: 10.0.5.0/24, ports: [5432]}
`)
	cases := []struct {
		target, method, path string
		code                 string
		key                  string
	}{
		{"api.example.com:443", "POST", "/v1/chat", "", "api.example.com"},
		{"API.Example.com.:443", "GET", "/v1/models", "", "api.example.com"},
		{"api.example.com:443", "GET", "/v2/x", codePath, ""},
		{"api.example.com:443", "GET", "/v1/files", codePath, ""},
		{"api.example.com:443", "GET", "/v1/FILES/x", codePath, ""},
		{"api.example.com:443", "GET", "/v1/a/../../admin", codePath, ""},
		{"api.example.com:443", "GET", "/v1%2ffiles", codePath, ""},
		{"api.example.com:443", "GET", "/v1/%2e%2e/x", codePath, ""},
		{"api.example.com:443", "GET", "/v1/x%00", codePath, ""},
		{"api.example.com:443", "GET", "/v1/%252e", codePath, ""},
		{"api.example.com:443", "GET", "//v1//models", "", "api.example.com"},
		{"api.example.com:443", "GET", "/v1/..;/admin", codePath, ""},
		{"api.example.com:443", "GET", "/v1/.%3bx/y", codePath, ""},
		{"api.example.com:443", "GET", "/v1/a;b/c", "", "api.example.com"},
		{"api.example.com:22", "GET", "/v1/x", codeDestination, ""},
		{"api.devbox.local:80", "GET", "/v1/x", "", "api.example.com"},
		{"nope.devbox.local:80", "GET", "/", codeDestination, ""},
		{"x.api.example.com:443", "GET", "/", codeDestination, ""},
		{"raw.github.com:443", "GET", "/", "", "*.github.com"},
		{"raw.github.com:443", "DELETE", "/", codeMethod, ""},
		{"github.com:443", "GET", "/", codeDestination, ""},
		{"db.example.com:5432", "GET", "/", "", "db.example.com"},
		{"db.example.com:443", "GET", "/", codeDestination, ""},
		{"off.example.com:443", "GET", "/", codeDestination, ""},
		{"10.0.5.7:5432", "GET", "/", "", "ip:10.0.5.0/24"},
		{"10.0.5.7:22", "GET", "/", codeDestination, ""},
		{"10.0.6.7:5432", "GET", "/", codeDestination, ""},
		{"169.254.169.254:80", "GET", "/", codeForbidden, ""},
		{"[fd00:ec2::254]:80", "GET", "/", codeForbidden, ""},
	}
	for _, c := range cases {
		a, err := parseAuthority(c.target, 0)
		if err != nil {
			t.Fatalf("%s: %v", c.target, err)
		}
		d, dn := matchDest(pol, a)
		if dn == nil {
			dn = checkRequest(d, c.method, c.path)
		}
		got := ""
		if dn != nil {
			got = dn.code
			if dn.reason == "" || dn.status == 0 {
				t.Errorf("%s %s: denial without reason or status", c.target, c.path)
			}
		}
		if got != c.code {
			t.Errorf("%s %s %s: got %q (%v), want %q", c.method, c.target, c.path, got, dn, c.code)
		}
		if c.key != "" && d.key() != c.key {
			t.Errorf("%s: key %q, want %q", c.target, d.key(), c.key)
		}
	}
}

// FuzzConnectTarget: whatever a CONNECT line holds, a parsed authority is
// canonical (re-parsing its rendering gives it back) and never names
// something the policy lookup and the dialer would read differently.
func FuzzConnectTarget(f *testing.F) {
	for _, s := range []string{"example.com:443", "[::1]:443", "10.0.0.1:5432", "a.b:0", "127.1:80", "[fe80::1%eth0]:1", "bücher.de:443", "x:99999", "@:1", "[::ffff:1.2.3.4]:80", "A.B.:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAuthority(s, 0)
		if err != nil {
			return
		}
		if a.port < 1 || a.port > 65535 {
			t.Fatalf("%q: port %d", s, a.port)
		}
		if strings.ContainsAny(a.host, "@/\\?#% []") {
			t.Fatalf("%q: host %q", s, a.host)
		}
		b, err := parseAuthority(a.hostport(), 0)
		if err != nil || b != a {
			t.Fatalf("%q -> %q -> %+v, %v", s, a.hostport(), b, err)
		}
		if !a.ip.IsValid() {
			if n, err := policy.NormalizeHost(a.host); err != nil || n != a.host {
				t.Fatalf("%q: host %q not normalized", s, a.host)
			}
		} else if a.ip.Is4In6() || a.ip.Zone() != "" {
			t.Fatalf("%q: ip %v not canonical", s, a.ip)
		}
	})
}

// FuzzHostHeader: Host headers (transparent HTTP, intercepted requests)
// parse to the same authority as the equivalent CONNECT target.
func FuzzHostHeader(f *testing.F) {
	for _, s := range []string{"example.com", "example.com:8080", "[::1]", "EXAMPLE.com.", "a.devbox.local", "1.2.3.4", "x:y", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAuthority(s, 80)
		if err != nil {
			return
		}
		withPort := s
		if !strings.HasSuffix(s, "]") && strings.LastIndexByte(s, ':') < 0 || strings.HasSuffix(s, "]") {
			withPort = s + ":80"
		}
		b, err := parseAuthority(withPort, 0)
		if err != nil || b != a {
			t.Fatalf("%q: %+v vs %q: %+v %v", s, a, withPort, b, err)
		}
	})
}
