package policy

import (
	"errors"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	cases := []struct {
		in, want string
		err      bool
	}{
		{"", "/", false},
		{"*", "/", false},
		{"/", "/", false},
		{"/v1/models", "/v1/models", false},
		{"/v1/models/", "/v1/models/", false},
		{"//v1///models", "/v1/models", false},
		{"/v1/./models", "/v1/models", false},
		{"/v1/x/../models", "/v1/models", false},
		{"/a/../b", "/b", false},
		{"/../../etc/passwd", "/etc/passwd", false},
		{"/a/.", "/a/", false},
		{"/a/b/..", "/a/", false},
		{"/a/..", "/", false},
		{"/.", "/", false},
		{"/..", "/", false},
		{"/...", "/...", false},
		{"/a/.b/..c", "/a/.b/..c", false},
		{"/%76%31/models", "/v1/models", false},
		{"/v1/%2e%2e/admin", "/admin", false},
		{"/v1/%2E%2e/admin", "/admin", false},
		{"/v1/.%2e/admin", "/admin", false},
		{"/v1/%2e/admin", "/v1/admin", false},
		{"/a%20b", "/a b", false},
		{"/caf%C3%A9", "/café", false},
		{"/café", "/café", false},
		{"/a;b", "/a;b", false},
		{"/a?b", "/a?b", false},
		{"/%3Fq", "/?q", false},
		{"/a/..;/b", "", true},
		{"/a/.;x/b", "", true},
		{"/a/%2e%2e;/b", "", true},
		{"/a%2fb", "", true},
		{"/a%2Fb", "", true},
		{"/a%5cb", "", true},
		{"/a%5Cb", "", true},
		{"/a\\b", "", true},
		{"/a%00", "", true},
		{"/a%0a", "", true},
		{"/a%7f", "", true},
		{"/a\x00", "", true},
		{"/a\tb", "", true},
		{"/a%252f", "", true},
		{"/a%25", "", true},
		{"/a%2", "", true},
		{"/a%", "", true},
		{"/a%zz", "", true},
		{"/a%%32%66", "", true},
		{"v1/models", "", true},
		{"http://x/y", "", true},
	}
	for _, c := range cases {
		got, err := NormalizePath(c.in)
		if c.err {
			if err == nil || !errors.Is(err, ErrAmbiguousPath) {
				t.Errorf("NormalizePath(%q) = %q, %v; want ErrAmbiguousPath", c.in, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestCheckPath(t *testing.T) {
	p := mustParse(t, `
domains:
  - domain: api.example.com
    allowed_paths: ["/v1/*", "/health", "/static*", "/dir/", "/Case/*"]
    denied_paths: ["/v1/files*", "/v1/admin/*", "/v1/secret", "/v1/keys/"]
  - domain: deny-only.example.com
    denied_paths: ["/admin*"]
  - domain: open.example.com
  - domain: root.example.com
    allowed_paths: ["/"]
  - domain: all.example.com
    allowed_paths: ["/*"]
    denied_paths: ["/*"]
`)
	type tc struct {
		path    string
		allowed bool
		rule    string
		err     bool
	}
	cases := map[string][]tc{
		"api.example.com": {
			// Allowed, the three pattern forms.
			{"/v1/models", true, "allowed_paths /v1/*", false},
			{"/v1/", true, "allowed_paths /v1/*", false},
			{"/v1", false, "allowed_paths", false}, // "/v1/*" is the prefix "/v1/"
			{"/v1x", false, "allowed_paths", false},
			{"/health", true, "allowed_paths /health", false},
			{"/health/", true, "allowed_paths /health", false},
			{"/health/x", false, "allowed_paths", false},
			{"/healthz", false, "allowed_paths", false},
			{"/static", true, "allowed_paths /static*", false},
			{"/static.css", true, "allowed_paths /static*", false},
			{"/static/a/b", true, "allowed_paths /static*", false},
			{"/dir/", true, "allowed_paths /dir/", false},
			{"/dir", false, "allowed_paths", false},
			{"/", false, "allowed_paths", false},
			// Normalization before matching.
			{"//v1//models", true, "allowed_paths /v1/*", false},
			{"/v1/../admin", false, "allowed_paths", false},
			{"/v1/%2e%2e/admin", false, "allowed_paths", false},
			{"/x/../v1/models", true, "allowed_paths /v1/*", false},
			{"/%76%31/models", true, "allowed_paths /v1/*", false},
			// Allowed matches case-sensitively: a case-folding server cannot widen it.
			{"/V1/models", false, "allowed_paths", false},
			{"/HEALTH", false, "allowed_paths", false},
			{"/Case/x", true, "allowed_paths /Case/*", false},
			{"/case/x", false, "allowed_paths", false},
			// Denied wins, case-insensitively, through every encoding.
			{"/v1/files", false, "denied_paths /v1/files*", false},
			{"/v1/files/abc", false, "denied_paths /v1/files*", false},
			{"/v1/filesystem", false, "denied_paths /v1/files*", false},
			{"/V1/FILES", false, "denied_paths /v1/files*", false},
			{"/v1/%66iles", false, "denied_paths /v1/files*", false},
			{"/v1/%46ILES", false, "denied_paths /v1/files*", false},
			{"/v1//files", false, "denied_paths /v1/files*", false},
			{"/v1/x/../files", false, "denied_paths /v1/files*", false},
			{"/v1/./files", false, "denied_paths /v1/files*", false},
			{"/v1/files;jsessionid=1", false, "denied_paths /v1/files*", false},
			{"/v1/admin/users", false, "denied_paths /v1/admin/*", false},
			{"/v1/admin", false, "denied_paths /v1/admin/*", false}, // "/x/*" also denies "/x"
			{"/v1/ADMIN", false, "denied_paths /v1/admin/*", false},
			{"/v1/administrator", true, "allowed_paths /v1/*", false},
			{"/v1/secret", false, "denied_paths /v1/secret", false},
			{"/v1/secret/", false, "denied_paths /v1/secret", false},
			{"/v1/Secret", false, "denied_paths /v1/secret", false},
			{"/v1/secret;x=1", false, "denied_paths /v1/secret", false},
			{"/v1/secret/x", true, "allowed_paths /v1/*", false},
			{"/v1/secrets", true, "allowed_paths /v1/*", false},
			{"/v1/keys", false, "denied_paths /v1/keys/", false},
			{"/v1/keys/", false, "denied_paths /v1/keys/", false},
			// Ambiguous encodings are refused, not guessed.
			{"/v1/files%2fx", false, "", true},
			{"/v1%2ffiles", false, "", true},
			{"/v1/%5cfiles", false, "", true},
			{"/v1/files%00", false, "", true},
			{"/v1/%252e%252e/admin", false, "", true},
			{"/v1/..;/admin", false, "", true},
			{"/v1/models%", false, "", true},
			// Invalid UTF-8 (overlong "/" as %c0%af, lone continuation
			// bytes): some decoders turn it into "/" or "."; refused.
			{"/v1/x%c0%af..%c0%afadmin", false, "", true},
			{"/v1/x%c0%ae%c0%ae/admin", false, "", true},
			{"/v1/%e0%80%afadmin", false, "", true},
			{"/v1/%80", false, "", true},
			{"/v1/caf%c3%a9", true, "allowed_paths /v1/*", false}, // valid UTF-8 is fine
			// Servers that trim trailing dots or spaces (Windows, IIS) see
			// "/v1/secret." as "/v1/secret": exact denied rules cover them.
			{"/v1/secret.", false, "denied_paths /v1/secret", false},
			{"/v1/secret%20", false, "denied_paths /v1/secret", false},
			{"/v1/secret.%20.", false, "denied_paths /v1/secret", false},
			{"/v1/secret./", false, "denied_paths /v1/secret", false},
			// Servers that apply Unicode compatibility folding (NFKC) see
			// fullwidth letters and dots, and ligatures, as ASCII: the
			// folded path must pass the rules too.
			{"/v1/ｆｉｌｅｓ", false, "denied_paths /v1/files*", false},
			{"/v1/%EF%AC%81les", false, "denied_paths /v1/files*", false}, // U+FB01 "fi"
			{"/v1/%EF%BC%8E%EF%BC%8E/admin", false, "allowed_paths", false},
			{"/v1/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin", false, "allowed_paths", false},
			{"/v1/ｍｏｄｅｌｓ", true, "allowed_paths /v1/*", false},
			{"/v1/x%EF%BC%85%EF%BC%92%EF%BD%86", false, "", true}, // fullwidth "%2f"
			{"/v1/x%EF%BC%BCy", false, "", true},                  // fullwidth backslash
		},
		"deny-only.example.com": {
			{"/anything", true, "", false},
			{"/", true, "", false},
			{"/admin", false, "denied_paths /admin*", false},
			{"/Admin/x", false, "denied_paths /admin*", false},
			{"/x/%2e%2e/admin", false, "denied_paths /admin*", false},
			{"/%61dmin", false, "denied_paths /admin*", false},
			{"/a%2fb", false, "", true},
			{"/%EF%BD%81dmin", false, "denied_paths /admin*", false},
			{"/ＡＤＭＩＮ/x", false, "denied_paths /admin*", false},
			{"/x/%EF%BC%8E%EF%BC%8E/admin", false, "denied_paths /admin*", false},
			{"/café", true, "", false},
		},
		"open.example.com": {
			// No rules: nothing to decide, so nothing is refused.
			{"/a%2fb", true, "", false},
			{"/anything/../x", true, "", false},
		},
		"root.example.com": {
			{"/", true, "allowed_paths /", false},
			{"", true, "allowed_paths /", false},
			{"/x", false, "allowed_paths", false},
		},
		"all.example.com": {
			{"/", false, "denied_paths /*", false},
			{"/x", false, "denied_paths /*", false},
		},
	}
	for host, tcs := range cases {
		d := p.Lookup(host)
		if d == nil {
			t.Fatalf("no entry for %s", host)
		}
		for _, c := range tcs {
			allowed, rule, err := d.CheckPath(c.path)
			if c.err {
				if err == nil || !errors.Is(err, ErrAmbiguousPath) || allowed {
					t.Errorf("%s CheckPath(%q) = %v, %q, %v; want ErrAmbiguousPath", host, c.path, allowed, rule, err)
				}
				continue
			}
			if err != nil || allowed != c.allowed || rule != c.rule {
				t.Errorf("%s CheckPath(%q) = %v, %q, %v; want %v, %q", host, c.path, allowed, rule, err, c.allowed, c.rule)
			}
		}
	}
	if p.Lookup("open.example.com").HasPathRules() || !p.Lookup("deny-only.example.com").HasPathRules() {
		t.Error("HasPathRules")
	}
}
