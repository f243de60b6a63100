package policy

import (
	"errors"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
	"gopkg.in/yaml.v3"
)

// FuzzParse: the parser never panics; every error has a message and names the
// file; an accepted policy validates again, and survives a round trip through
// YAML unchanged.
func FuzzParse(f *testing.F) {
	examples, _ := filepath.Glob("../examples/*.yaml")
	for _, name := range examples {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(string(b))
		}
	}
	_, blocks := docBlocks(f, "../docs/configuration.md")
	for _, b := range blocks {
		if b.lang == "yaml" {
			f.Add(b.text)
		}
	}
	f.Add(everyKeyPolicy)
	for _, s := range validSnippets {
		f.Add(s)
	}
	for _, s := range []string{
		seedPolicy, matchPolicy, "", "~", "{}", "[]", "mode: connected\n", "---\n---\n", "a: 1\n---\nb: 2\n",
		"domains:\n  - domain: \"*.com\"\n  - domain: bücher.de\n  - domain: a.*.b\n",
		"domains: [{domain: a.com, alias: x}, {domain: b.com, alias: x}]",
		"domains: [{domain: a.com, credential: {header: X, env: A, file: /b}}]",
		"ip_ranges: [{cidr: 10.0.0.1/8, ports: [0, 70000]}]",
		"egress_limits: {default: 1.5GiB}\ndns: {cache_ttl: 1h, tunneling: {max_entropy: 3.5}}",
		"domains:\n  - &b {domain: a.com, read_only: true}\n  - <<: *b\n    domain: b.com\n",
		"x: &a [*a]", "a: &a {b: *a}", "sandbox: {env: {A: &x 1, B: *x}}",
		"dns:\n\tupstream: 1\n", "mode: \"\\u0000\"", "domains: [{domain: \"\\u00e9.com\"}]",
		"proxy: {max_header_bytes: 9223372036854775807, timeout: 9223372036}",
		"sandbox: {resources: {cpus: 1e308, memory: 8EiB}}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Parse("f.yaml", []byte(src))
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			for _, e := range es {
				if e.Msg == "" || e.File != "f.yaml" || !strings.HasPrefix(e.Error(), "f.yaml:") {
					t.Fatalf("bad error %#v", e)
				}
				if e.Line < 0 || e.Col < 0 || (e.Line > 0) != (e.Col > 0) {
					t.Fatalf("bad position %#v", e)
				}
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted, then Validate failed: %v", err)
		}
		out, err := yaml.Marshal(p)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		p2, err := Parse("f.yaml", out)
		if err != nil {
			t.Fatalf("round trip refused:\n%s\n%v", out, err)
		}
		out2, _ := yaml.Marshal(p2)
		if string(out) != string(out2) {
			t.Fatalf("round trip changed the policy:\n%s\n---\n%s", out, out2)
		}
	})
}

// FuzzNormalizeHost: the canonical form is a valid, lower-case ASCII DNS name
// without a trailing dot, never an IP address, and a fixed point.
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"example.com", "Example.COM.", "bücher.de", "XN--BCHER-KVA.DE", "xn--zz.com", "*.example.com",
		"1.2.3.4", "127.1", "0x7f.1", "[::1]", "a..b", "a.b.", "a.b..", "_dmarc.x", "-a.b", "a b",
		"example\uff0ecom", "exa\u200bmple.com", "\u3002", "ß.de", "ﬀ.com", "İ.com", strings.Repeat("a.", 127),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := NormalizeHost(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidHost) {
				t.Fatalf("error %v does not wrap ErrInvalidHost", err)
			}
			return
		}
		if h == "" || len(h) > 253 || strings.HasSuffix(h, ".") || strings.Contains(h, "..") || h != strings.ToLower(h) {
			t.Fatalf("NormalizeHost(%q) = %q", s, h)
		}
		for i := 0; i < len(h); i++ {
			if c := h[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				t.Fatalf("NormalizeHost(%q) = %q has %q", s, h, c)
			}
		}
		if _, ok := ParseIPHost(h); ok || endsInNumber(h) {
			t.Fatalf("NormalizeHost(%q) = %q is an IP address", s, h)
		}
		if h2, err := NormalizeHost(h); err != nil || h2 != h {
			t.Fatalf("not a fixed point: %q -> %q -> %q, %v", s, h, h2, err)
		}
		ascii := utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return r >= 0x80 }) < 0
		if ascii && !strings.HasSuffix(s, ".") {
			if h2, err := NormalizeHost(strings.ToUpper(s) + "."); err != nil || h2 != h {
				t.Fatalf("case or trailing dot changed %q: %q, %v", s, h2, err)
			}
		}
	})
}

// FuzzNormalizePath: the normalized path is absolute, has no empty, "." or
// ".." segments and nothing left to decode, is a fixed point, equals
// path.Clean of the decoded input (up to a trailing slash), and a path rule
// decision on it never strays outside what the rules say.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{
		"/", "", "*", "/v1/models", "//v1//x/", "/a/./b/../c", "/a/..", "/../..", "/%2e%2e/x", "/%2E%2e%2f",
		"/a%2fb", "/a%5Cb", "/a%00", "/a%252f", "/a%", "/a%4", "/%41%42", "/caf%C3%A9", "/a;b/..;/c",
		"/v1/files", "/V1/Files;x", "/v1/admin", "/v1/%61dmin/", "/\xff\xfe", "/a\\b", "/a\tb", "a/b",
		"/v1/%EF%BD%86iles", "/v1/\uff0e\uff0e/admin", "/v1/\uff05\uff12\uff46", "/v1/\ufb01les",
	} {
		f.Add(s)
	}
	p, err := Parse("f.yaml", []byte(`domains: [{domain: a.com, allowed_paths: ["/v1/*"], denied_paths: ["/v1/files*", "/v1/admin/*"]}]`))
	if err != nil {
		f.Fatal(err)
	}
	d := p.Lookup("a.com")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizePath(s)
		allowed, rule, cerr := d.CheckPath(s)
		if err != nil {
			if !errors.Is(err, ErrAmbiguousPath) {
				t.Fatalf("error %v does not wrap ErrAmbiguousPath", err)
			}
			if cerr == nil || allowed {
				t.Fatalf("CheckPath(%q) = %v, %v; NormalizePath failed with %v", s, allowed, cerr, err)
			}
			return
		}
		if !strings.HasPrefix(n, "/") || strings.Contains(n, "//") || strings.ContainsAny(n, "%\\") {
			t.Fatalf("NormalizePath(%q) = %q", s, n)
		}
		for _, seg := range strings.Split(n, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("NormalizePath(%q) = %q has a dot segment", s, n)
			}
		}
		for _, c := range []byte(n) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("NormalizePath(%q) = %q has a control character", s, n)
			}
		}
		if n2, err := NormalizePath(n); err != nil || n2 != n {
			t.Fatalf("not a fixed point: %q -> %q -> %q, %v", s, n, n2, err)
		}
		if s != "" && s != "*" {
			dec, err := url.PathUnescape(s)
			if err != nil {
				t.Fatalf("NormalizePath accepted %q, which url.PathUnescape refuses: %v", s, err)
			}
			if path.Clean(dec) != path.Clean(n) {
				t.Fatalf("NormalizePath(%q) = %q, path.Clean(decoded) = %q", s, n, path.Clean(dec))
			}
		}
		// A path that Unicode compatibility folding changes must pass in
		// both forms, and may be refused when its folded form is ambiguous.
		forms := []string{n}
		if f := norm.NFKC.String(n); f != n {
			if cerr != nil {
				if !errors.Is(cerr, ErrAmbiguousPath) || allowed {
					t.Fatalf("CheckPath(%q) = %v, %v", s, allowed, cerr)
				}
				return
			}
			fc, err := cleanSegments(f)
			if err != nil {
				t.Fatalf("CheckPath(%q) accepted a folded form %q that cleanSegments refuses: %v", s, f, err)
			}
			forms = append(forms, fc)
		}
		if cerr != nil {
			t.Fatalf("CheckPath(%q): %v after NormalizePath succeeded", s, cerr)
		}
		if allowed {
			for _, n := range forms {
				low := strings.ToLower(stripParams(n))
				if !strings.HasPrefix(n, "/v1/") || strings.HasPrefix(low, "/v1/files") || strings.HasPrefix(low, "/v1/admin/") || strings.TrimSuffix(low, "/") == "/v1/admin" {
					t.Fatalf("CheckPath(%q) allowed %q by %q", s, n, rule)
				}
			}
		} else if len(forms) == 1 && strings.HasPrefix(n, "/v1/") && !strings.HasPrefix(strings.ToLower(n), "/v1/files") && !strings.HasPrefix(strings.ToLower(n), "/v1/admin") && !strings.Contains(n, ";") {
			t.Fatalf("CheckPath(%q) denied %q by %q", s, n, rule)
		}
	})
}

// FuzzLookup compares Lookup with a brute-force reading of the rules: the
// exact entry if any, else the wildcard with the longest base that is a
// proper suffix; case, one trailing dot and Unicode vs punycode do not matter.
func FuzzLookup(f *testing.F) {
	p, err := Parse("f.yaml", []byte(matchPolicy))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"example.com", "www.example.com", "a.b.api.example.com", "exact.api.example.com", "github.com",
		"API.GITHUB.COM.", "bücher.de", "www.münchen.de", "disabled.example.com", "x.off.example.org",
		"example.com..", ".example.com", "com", "", "_srv.example.net", "evil-example.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		got := p.Lookup(host)
		h, err := NormalizeHost(host)
		if err != nil {
			if got != nil {
				t.Fatalf("Lookup(%q) matched an invalid host", host)
			}
			return
		}
		var want *Domain
		best := -1
		for i := range p.Domains {
			d := &p.Domains[i]
			if !d.IsEnabled() {
				continue
			}
			if d.Domain == h {
				want, best = d, 1<<30
				break
			}
			if base, ok := strings.CutPrefix(d.Domain, "*."); ok && strings.HasSuffix(h, "."+base) && len(base) > best {
				want, best = d, len(base)
			}
		}
		if got != want {
			t.Fatalf("Lookup(%q) = %v, want %v", host, got, want)
		}
		for _, v := range []string{strings.ToUpper(h), h + "."} {
			if p.Lookup(v) != got {
				t.Fatalf("Lookup(%q) != Lookup(%q)", v, host)
			}
		}
	})
}
