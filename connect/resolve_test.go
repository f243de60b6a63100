package connect

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/connect/wire"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(tokFile, []byte("from-file\n"), 0o600)
	write := func(body string) string {
		p := filepath.Join(dir, "cagent.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	connected := "mode: connected\ncontrol_plane: {url: 'https://cp.test', token_file: " + tokFile + "}\n"
	for _, tc := range []struct {
		name, body, urlFlag, tokFlag, env string
		ok                                bool
		url, token, err                   string
	}{
		{"standalone", "domains: []\n", "", "", "", false, "", "", ""},
		{"flag only", "domains: []\n", "http://127.0.0.1:1", "t-flag", "", true, "http://127.0.0.1:1", "t-flag", ""},
		{"policy, token file", connected, "", "", "", true, "https://cp.test", "from-file", ""},
		{"env beats file", connected, "", "", "t-env", true, "https://cp.test", "t-env", ""},
		{"flag beats env", connected, "http://127.0.0.1:2", "t-flag", "t-env", true, "http://127.0.0.1:2", "t-flag", ""},
		{"no token", "mode: connected\ncontrol_plane: {url: 'https://cp.test'}\n", "", "", "", true, "", "", "agent token is required"},
		{"bad url", "domains: []\n", "ftp://x", "t", "", true, "", "", "use http(s)"},
		{"missing ca", "mode: connected\ncontrol_plane: {url: 'https://cp.test', ca_file: /nonexistent}\n", "", "t", "", true, "", "", "ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{BasePath: write(tc.body), StateDir: dir}
			ok, err := Resolve(&cfg, tc.urlFlag, tc.tokFlag, func(string) string { return tc.env })
			if ok != tc.ok || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("ok %v err %v", ok, err)
			}
			if err == nil && ok && (cfg.URL != tc.url || cfg.Token != tc.token) {
				t.Fatalf("url %q token %q", cfg.URL, cfg.Token)
			}
		})
	}
}

func TestInvalidStateKeepsLastGoodPolicy(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "cagent.yaml")
	os.WriteFile(base, []byte("dns: {upstream: [127.0.0.1:53]}\n"), 0o600)
	c, err := New(Config{URL: "http://127.0.0.1:1", Token: "t", BasePath: base, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := &wire.Msg{Type: wire.TypeState, PolicyYAML: "version: 1\ndomains:\n  - domain: pypi.org\n", Version: "v1"}
	if err := c.applyState(good); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(c.PolicyPath())
	for _, bad := range []string{"domains: [{domain: 'not a domain!'}]", "domains: {", "version: 9\n"} {
		if err := c.applyState(&wire.Msg{Type: wire.TypeState, PolicyYAML: bad, Version: "v2"}); err == nil {
			t.Fatalf("accepted %q", bad)
		}
	}
	after, _ := os.ReadFile(c.PolicyPath())
	if string(before) != string(after) || c.Version() != "v1" || !strings.Contains(string(after), "pypi.org") {
		t.Fatalf("policy changed by an invalid state:\n%s", after)
	}
}
