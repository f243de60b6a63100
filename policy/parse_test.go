package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror:\n%v", src, err)
	}
	return p
}

func parseErrors(t *testing.T, src string) Errors {
	t.Helper()
	_, err := Parse("test.yaml", []byte(src))
	if err == nil {
		t.Fatalf("Parse accepted:\n%s", src)
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T, want Errors: %v", err, err)
	}
	return es
}

func TestExampleFile(t *testing.T) {
	p, err := ParseFile("../examples/cagent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := p.Lookup("api.openai.com")
	if d == nil || d.Alias != "openai" || d.Credential.Env != "OPENAI_API_KEY" || d.Timeout.D() != 120*time.Second {
		t.Fatalf("api.openai.com entry: %+v", d)
	}
	if p.Lookup("api.github.com") == nil || p.Lookup("github.com") != nil {
		t.Error("*.github.com matches wrongly")
	}
	if p.EgressLimitFor(d) != 10<<20 || p.EgressLimitFor(p.Lookup("pypi.org")) != 100<<20 {
		t.Error("egress limits")
	}
	if p.File() != "../examples/cagent.yaml" {
		t.Errorf("File() = %q", p.File())
	}
}

// The seed's policy format, verbatim keys: must be accepted unchanged.
const seedPolicy = `
mode: standalone
dns:
  upstream: [8.8.8.8, 1.1.1.1]
  cache_ttl: 300
rate_limits:
  default:
    requests_per_minute: 120
    burst_size: 20
domains:
  - domain: api.openai.com
    alias: openai
    timeout: 120s
    rate_limit:
      requests_per_minute: 60
      burst_size: 10
    credential:
      header: Authorization
      format: "Bearer {value}"
      env: OPENAI_API_KEY
  - domain: api.anthropic.com
    alias: claude
    credential:
      header: x-api-key
      format: "{value}"
      env: ANTHROPIC_API_KEY
  - domain: "*.github.com"
  - domain: pypi.org
    read_only: true
    allowed_paths: ["/simple/*", "/packages/*"]
`

func TestSeedFormat(t *testing.T) {
	p := mustParse(t, seedPolicy)
	if len(p.Domains) != 4 || p.Lookup("claude.devbox.local") != nil || p.LookupAlias("claude.devbox.local").Domain != "api.anthropic.com" {
		t.Fatalf("domains: %+v", p.Domains)
	}
}

// TestEveryKey sets every key and checks where its value lands.
const everyKeyPolicy = `
version: 1
mode: connected
enforcement: report
dns:
  upstream: ["10.0.0.2", "10.0.0.3:5353", "[2001:db8::1]:53", "2001:db8::2"]
  cache_ttl: 5m
  answer: upstream
  rate_limit: {requests_per_minute: 600, burst_size: 50}
  tunneling: {max_label_length: 40, max_name_length: 120, max_entropy: 3.5, distinct_names_per_hour: -1}
rate_limits:
  default: {requests_per_minute: 120}
egress_limits:
  default: 1GiB
proxy:
  upstream_proxy: http://corp-proxy.example:3128
  ca_bundle: /etc/ssl/corp.pem
  max_header_bytes: 32KiB
  max_tunnels: 100
  idle_timeout: 90
  timeout: 30s
domains:
  - domain: API.Example.COM.
    alias: api
    ports: [443, 8443]
    timeout: 2m
    read_only: true
    allowed_paths: ["/v1/*", "/health"]
    denied_paths: ["/v1/admin*"]
    rate_limit: {requests_per_minute: 30, burst_size: 3}
    egress_limit: 0
    tls_intercept: true
    allow_private: true
    enabled: true
    credential: {header: X-Api-Key, file: /run/secrets/key}
  - domain: "*.example.org"
  - domain: gh.example.org
    credential: {header: Authorization, format: "token {value}", secret: gh}
  - domain: old.example.net
    enabled: false
ip_ranges:
  - {cidr: 10.0.5.0/24, ports: [5432]}
  - {cidr: "2001:db8::/64"}
  - {cidr: 192.0.2.7}
sandbox:
  runtime: runc
  rootfs: /srv/rootfs
  workspace: /srv/ws
  user: "1001"
  hostname: devbox
  subnet_pool: 10.77.0.0/20
  resources: {cpus: 0.5, memory: 512MiB, pids: 64}
  env: {LANG: C.UTF-8, EMPTY: ""}
control_plane:
  url: https://cp.example.com
  token_file: /etc/cagent/token
  ca_file: /etc/cagent/cp.pem
admin:
  listen: 0.0.0.0:8443
  tls_cert: /etc/cagent/admin.crt
  tls_key: /etc/cagent/admin.key
audit:
  retention: 168h
  max_size: 16MiB
`

func TestEveryKey(t *testing.T) {
	p := mustParse(t, everyKeyPolicy)
	d := p.Lookup("api.example.com")
	checks := []struct {
		name      string
		got, want any
	}{
		{"version", p.Version, 1},
		{"mode", p.Mode, "connected"},
		{"enforcement", p.Enforcement, "report"},
		{"Enforcing", p.Enforcing(), false},
		{"dns.upstream", fmt.Sprint(p.DNS.Upstream), "[10.0.0.2 10.0.0.3:5353 [2001:db8::1]:53 2001:db8::2]"},
		{"dns.cache_ttl", p.DNS.CacheTTL.D(), 5 * time.Minute},
		{"dns.answer", p.DNS.Answer, "upstream"},
		{"dns.rate_limit", *p.DNS.RateLimit, RateLimit{600, 50}},
		{"dns.tunneling", p.DNS.Tunneling, Tunneling{40, 120, 3.5, -1}},
		{"rate_limits.default (burst derived)", *p.RateLimits.Default, RateLimit{120, 20}},
		{"egress_limits.default", p.EgressLimits.Default, Size(1 << 30)},
		{"proxy.upstream_proxy", p.Proxy.UpstreamProxy, "http://corp-proxy.example:3128"},
		{"proxy.ca_bundle", p.Proxy.CABundle, "/etc/ssl/corp.pem"},
		{"proxy.max_header_bytes", p.Proxy.MaxHeaderBytes, Size(32 << 10)},
		{"proxy.max_tunnels", p.Proxy.MaxTunnels, 100},
		{"proxy.idle_timeout", p.Proxy.IdleTimeout.D(), 90 * time.Second},
		{"proxy.timeout", p.Proxy.Timeout.D(), 30 * time.Second},
		{"domain normalized", d.Domain, "api.example.com"},
		{"alias", p.LookupAlias("API.devbox.local."), d},
		{"ports", fmt.Sprint(d.Ports), "[443 8443]"},
		{"port 8443", d.PortAllowed(8443), true},
		{"port 80 not listed", d.PortAllowed(80), false},
		{"timeout", p.TimeoutFor(d).D(), 2 * time.Minute},
		{"read_only POST", d.MethodAllowed("POST"), false},
		{"read_only HEAD", d.MethodAllowed("HEAD"), true},
		{"paths", d.HasPathRules(), true},
		{"rate_limit", *p.RateLimitFor(d), RateLimit{30, 3}},
		{"egress_limit 0 (unlimited, overrides default)", p.EgressLimitFor(d), Size(0)},
		{"tls_intercept", d.TLSIntercept, true},
		{"allow_private", d.AllowPrivate, true},
		{"enabled", d.IsEnabled(), true},
		{"credential", *d.Credential, Credential{Header: "X-Api-Key", Format: "{value}", File: "/run/secrets/key"}},
		{"exact entry under a wildcard", p.Lookup("gh.example.org").Credential.Secret, "gh"},
		{"wildcard without credential", p.Lookup("a.example.org").Credential == nil, true},
		{"wildcard defaults", p.TimeoutFor(p.Lookup("a.example.org")).D(), 30 * time.Second},
		{"disabled", p.Lookup("old.example.net") == nil, true},
		{"ip_ranges[0]", p.IPRangeFor(mustAddr("10.0.5.9"), 5432) == &p.IPRanges[0], true},
		{"ip_ranges[0] other port", p.IPRangeFor(mustAddr("10.0.5.9"), 22) == nil, true},
		{"ip_ranges[1] any port", p.IPRangeFor(mustAddr("2001:db8::99"), 22) == &p.IPRanges[1], true},
		{"ip_ranges[2] single address", p.IPRanges[2].Prefix().String(), "192.0.2.7/32"},
		{"ip_ranges mapped", p.IPRangeFor(mustAddr("::ffff:10.0.5.1"), 5432) != nil, true},
		{"sandbox.runtime", p.Sandbox.Runtime, "runc"},
		{"sandbox.rootfs", p.Sandbox.Rootfs, "/srv/rootfs"},
		{"sandbox.workspace", p.Sandbox.Workspace, "/srv/ws"},
		{"sandbox.user", p.Sandbox.User, "1001"},
		{"sandbox.hostname", p.Sandbox.Hostname, "devbox"},
		{"sandbox.subnet_pool", p.Sandbox.SubnetPool, "10.77.0.0/20"},
		{"sandbox.resources", p.Sandbox.Resources, Resources{0.5, 512 << 20, 64}},
		{"sandbox.env", fmt.Sprint(p.Sandbox.Env), "map[EMPTY: LANG:C.UTF-8]"},
		{"control_plane", *p.ControlPlane, ControlPlane{"https://cp.example.com", "/etc/cagent/token", "/etc/cagent/cp.pem"}},
		{"admin", p.Admin, Admin{"0.0.0.0:8443", "/etc/cagent/admin.crt", "/etc/cagent/admin.key"}},
		{"audit", p.Audit, Audit{Duration(168 * time.Hour), 16 << 20}},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "{}", "~", "---\n", "mode: standalone\n---\n"} {
		p := mustParse(t, src)
		checks := []struct {
			name      string
			got, want any
		}{
			{"version", p.Version, Version},
			{"mode", p.Mode, "standalone"},
			{"enforcement", p.Enforcement, "enforce"},
			{"cache_ttl", p.DNS.CacheTTL.D(), DefaultCacheTTL},
			{"answer", p.DNS.Answer, "gateway"},
			{"dns rate", *p.DNS.RateLimit, RateLimit{1200, 200}},
			{"tunneling", p.DNS.Tunneling, Tunneling{63, 253, 4, 100}},
			{"rate default", p.RateLimitFor(nil) == nil, true},
			{"egress default", p.EgressLimitFor(nil), Size(0)},
			{"header bytes", p.Proxy.MaxHeaderBytes, Size(64 << 10)},
			{"tunnels", p.Proxy.MaxTunnels, 4096},
			{"idle", p.Proxy.IdleTimeout.D(), 5 * time.Minute},
			{"timeout", p.TimeoutFor(nil).D(), time.Minute},
			{"rootfs", p.Sandbox.Rootfs, "host"},
			{"user", p.Sandbox.User, "1000:1000"},
			{"pool", p.Sandbox.SubnetPool, "10.209.0.0/16"},
			{"resources", p.Sandbox.Resources, Resources{1, 2 << 30, 256}},
			{"admin", p.Admin.Listen, "127.0.0.1:8081"},
			{"audit", p.Audit, Audit{Duration(720 * time.Hour), 64 << 20}},
			{"no domains", p.Lookup("example.com") == nil, true},
		}
		for _, c := range checks {
			if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
				t.Errorf("%q: %s = %v, want %v", src, c.name, c.got, c.want)
			}
		}
	}
}

// validSnippets are policies the parser must accept (and the schema too).
var validSnippets = []string{
	"dns: {cache_ttl: 0}",
	"dns: {cache_ttl: \"300\"}",
	"dns: {cache_ttl: 1h30m}",
	"egress_limits: {default: 1048576}",
	"egress_limits: {default: 10MB}",
	"egress_limits: {default: 1.5GiB}",
	"egress_limits: {default: 512k}",
	"egress_limits: {default: 10 mib}",
	"sandbox: {resources: {memory: 1G}}",
	"rate_limits: {default: {requests_per_minute: 0.5}}",
	"domains: [{domain: xn--bcher-kva.de}]",
	"domains: [{domain: \"*.xn--bcher-kva.de\"}]",
	"domains: [{domain: \"*.example.co.uk\"}]",
	"domains: [{domain: _dmarc.example.com}]",
	"domains: [{domain: a.example.com}, {domain: \"*.a.example.com\"}, {domain: \"*.example.com\"}]",
	"domains: [{domain: example.com, enabled: false}, {domain: other.com, enabled: false}]",
	"domains: [{domain: a.com, alias: x1}, {domain: b.com, alias: x-2}]",
	"domains: [{domain: a.com, ports: [1, 65535]}]",
	"domains: [{domain: a.com, allowed_paths: [\"/\", \"/*\", \"/a/b\", \"/a/\", \"/a%20b/*\"]}]",
	"domains: [{domain: a.com, credential: {header: Authorization, format: \"Basic\\t{value}\", env: K}}]",
	"ip_ranges: [{cidr: 0.0.0.0/0}, {cidr: \"::/0\"}, {cidr: \"fe80::1\"}]",
	"sandbox: {user: \"0:0\", rootfs: /srv/rootfs}",
	"sandbox: {user: \"1000:100\"}",
	"sandbox: {runtime: gvisor}",
	"admin: {listen: \"[::1]:9000\"}",
	"admin: {listen: \"127.0.0.1:0\"}",
	"control_plane: {url: http://127.0.0.1:8080}",
	"mode: connected\ncontrol_plane: {url: https://cp.example}",
	"dns: {upstream: [\"127.0.0.1:53\"]}",
	// YAML features: anchors, aliases and merge keys.
	"rate_limits: {default: &rl {requests_per_minute: 10}}\ndomains: [{domain: a.com, rate_limit: *rl}]",
	"domains:\n  - &base {domain: a.com, read_only: true, timeout: 5s}\n  - <<: *base\n    domain: b.com\n",
	// Empty values are absent values.
	"dns:\nrate_limits:\negress_limits: ~\nmode:\n",
	"domains:\n  - domain: a.com\n    timeout:\n    credential: ~\n    ports:\n    enabled: null\n",
	"domains:\n  - &x {domain: a.com}\n  - &y {domain: b.com, read_only: true}\n  - <<: [*y, *x]\n    domain: c.com\n",
}

func TestValidValues(t *testing.T) {
	for _, src := range validSnippets {
		t.Run(src, func(t *testing.T) { mustParse(t, src) })
	}
}

func TestMergeKeys(t *testing.T) {
	p := mustParse(t, "domains:\n  - &base {domain: a.com, read_only: true, timeout: 5s}\n  - <<: *base\n    domain: b.com\n    timeout: 9s\n")
	b := p.Lookup("b.com")
	if b == nil || !b.ReadOnly || b.Timeout.D() != 9*time.Second || p.Lookup("a.com").Timeout.D() != 5*time.Second {
		t.Fatalf("merged entry: %+v", b)
	}
}

func TestSizesAndDurations(t *testing.T) {
	sizes := []struct {
		in   string
		want Size
		err  string
	}{
		{"0", 0, ""}, {"1", 1, ""}, {"1KiB", 1024, ""}, {"1kb", 1000, ""}, {"1K", 1024, ""},
		{"10MiB", 10 << 20, ""}, {"10MB", 10e6, ""}, {"1.5GiB", 3 << 29, ""}, {"2TiB", 2 << 40, ""},
		{"1TB", 1e12, ""}, {" 7 b ", 7, ""}, {"", 0, "empty size"}, {"MiB", 0, "invalid size"},
		{"-1", 0, "negative"}, {"-1MiB", 0, "negative"}, {"10XB", 0, "invalid size"}, {"ten", 0, "invalid size"},
		{"1e30", 0, "too large"}, {"9EiB", 0, "invalid size"}, {"inf", 0, "invalid size"}, {"NaN", 0, "invalid size"},
		{"10 MiB/s", 0, "invalid size"},
	}
	for _, c := range sizes {
		got, err := ParseSize(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseSize(%q) = %v, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		// String is parseable and round-trips.
		if back, err := ParseSize(got.String()); err != nil || back != got {
			t.Errorf("ParseSize(%q.String()=%q) = %v, %v", c.in, got.String(), back, err)
		}
	}
	durs := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"0", 0, ""}, {"300", 300 * time.Second, ""}, {"120s", 2 * time.Minute, ""}, {"1h30m", 90 * time.Minute, ""},
		{"250ms", 250 * time.Millisecond, ""}, {"", 0, "empty duration"}, {"5 minutes", 0, "invalid duration"},
		{"-5s", 0, "negative"}, {"-5", 0, "out of range"}, {"1.5", 0, "invalid duration"}, {"99999999999999999", 0, "out of range"},
		{"5d", 0, "invalid duration"},
	}
	for _, c := range durs {
		got, err := ParseDuration(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseDuration(%q) = %v, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got.D() != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

type wantErr struct {
	line, col int
	msg       string // substring of the message
}

// TestErrors checks every class of error, with its position. The sources are
// written so that the position points at the offending key or value.
func TestErrors(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []wantErr
	}{
		// Unknown keys, at every level, with a suggestion for typos.
		{"unknown top-level key", "mode: standalone\ndomain:\n  - x\n", []wantErr{{2, 1, `unknown key "domain" (did you mean "domains"?)`}}},
		{"unknown key without suggestion", "frobnicate: 1\n", []wantErr{{1, 1, `unknown key "frobnicate"`}}},
		{"unknown dns key", "dns:\n  upstreams: [1.1.1.1]\n", []wantErr{{2, 3, `dns.upstreams: unknown key "upstreams" (did you mean "upstream"?)`}}},
		{"unknown domain key", "domains:\n  - domain: a.com\n    readonly: true\n", []wantErr{{3, 5, `domains[0].readonly: unknown key "readonly" (did you mean "read_only"?)`}}},
		{"unknown credential key", "domains:\n  - domain: a.com\n    credential:\n      header: X\n      env: K\n      value: secret\n", []wantErr{{6, 7, `unknown key "value"`}}},
		{"unknown key in flow mapping", "sandbox: {resources: {cpu: 2}}\n", []wantErr{{1, 23, `sandbox.resources.cpu: unknown key "cpu" (did you mean "cpus"?)`}}},
		{"duplicate key", "mode: standalone\nmode: connected\n", []wantErr{{2, 1, `duplicate key "mode"`}}},
		{"duplicate env key", "sandbox:\n  env: {A: 1, A: 2}\n", []wantErr{{2, 15, `duplicate key "A"`}}},

		// Enums and versions.
		{"bad mode", "mode: cloud\n", []wantErr{{1, 7, `mode: invalid value "cloud": use one of standalone, connected`}}},
		{"bad enforcement", "enforcement: audit\n", []wantErr{{1, 14, `invalid value "audit"`}}},
		{"bad answer", "dns: {answer: real}\n", []wantErr{{1, 15, `dns.answer: invalid value "real"`}}},
		{"bad runtime", "sandbox:\n  runtime: docker\n", []wantErr{{2, 12, `sandbox.runtime: invalid value "docker": use one of gvisor, runc`}}},
		{"bad version", "version: 2\n", []wantErr{{1, 10, `unsupported policy version 2`}}},
		{"connected without control plane", "mode: connected\n", []wantErr{{1, 7, `mode connected needs control_plane.url`}}},

		// Durations and sizes.
		{"bad duration", "domains:\n  - domain: a.com\n    timeout: 2 minutes\n", []wantErr{{3, 14, `domains[0].timeout: invalid duration "2 minutes"`}}},
		{"negative duration", "proxy: {idle_timeout: -1s}\n", []wantErr{{1, 23, `invalid duration "-1s": negative`}}},
		{"duration as list", "dns: {cache_ttl: [1]}\n", []wantErr{{1, 18, `expected a scalar value, got a list`}}},
		{"bad size", "egress_limits:\n  default: 100 megabytes\n", []wantErr{{2, 12, `egress_limits.default: invalid size "100 megabytes"`}}},
		{"negative size", "domains: [{domain: a.com, egress_limit: -5MiB}]\n", []wantErr{{1, 41, `invalid size "-5MiB": negative`}}},
		{"bad memory", "sandbox: {resources: {memory: lots}}\n", []wantErr{{1, 31, `invalid size "lots"`}}},
		{"memory too small", "sandbox: {resources: {memory: 1MiB}}\n", []wantErr{{1, 31, `must be at least 16MiB`}}},
		{"header bytes out of range", "proxy: {max_header_bytes: 100}\n", []wantErr{{1, 27, `between 1KiB and 16MiB`}}},

		// Wildcards and domain names.
		{"wildcard TLD", "domains:\n  - domain: \"*.com\"\n", []wantErr{{2, 13, `invalid wildcard "*.com": "com" is a public suffix`}}},
		{"wildcard public suffix", "domains:\n  - domain: \"*.co.uk\"\n", []wantErr{{2, 13, `"co.uk" is a public suffix`}}},
		{"wildcard private public suffix", "domains: [{domain: \"*.github.io\"}]\n", []wantErr{{1, 20, `"github.io" is a public suffix`}}},
		{"wildcard over S3", "domains: [{domain: \"*.s3.amazonaws.com\"}, {domain: \"*.githubusercontent.com\"}]\n", []wantErr{{1, 20, `"s3.amazonaws.com" is a public suffix`}, {1, 52, `"githubusercontent.com" is a public suffix`}}},
		{"wildcard in the middle", "domains:\n  - domain: a.*.b\n", []wantErr{{2, 13, `invalid wildcard "a.*.b": only a leading "*." is allowed`}}},
		{"bare star", "domains:\n  - domain: \"*\"\n", []wantErr{{2, 13, `invalid wildcard "*"`}}},
		{"double wildcard", "domains: [{domain: \"*.*.example.com\"}]\n", []wantErr{{1, 20, `invalid wildcard`}}},
		{"star without dot", "domains: [{domain: \"*example.com\"}]\n", []wantErr{{1, 20, `invalid wildcard`}}},
		{"non-punycode IDN", "domains:\n  - domain: bücher.de\n", []wantErr{{2, 13, `non-ASCII domain "bücher.de": write it in punycode, "xn--bcher-kva.de"`}}},
		{"non-punycode wildcard IDN", "domains: [{domain: \"*.Bücher.de\"}]\n", []wantErr{{1, 20, `write it in punycode, "*.xn--bcher-kva.de"`}}},
		{"invalid IDN", "domains: [{domain: \"a\u200d\u200d.com\"}]\n", []wantErr{{1, 20, `is not a valid IDN`}}},
		{"invalid punycode", "domains: [{domain: xn--zz.com}]\n", []wantErr{{1, 20, `invalid punycode`}}},
		{"IP as domain", "domains: [{domain: 10.0.0.1}]\n", []wantErr{{1, 20, `"10.0.0.1" is an IP address: list IP destinations under ip_ranges`}}},
		{"IPv6 as domain", "domains: [{domain: \"::1\"}]\n", []wantErr{{1, 20, `is an IP address`}}},
		{"IP-like as domain", "domains: [{domain: 127.1}, {domain: 0x7f.1}, {domain: \"1.2.3.4..\"}]\n", []wantErr{
			{1, 20, `"127.1" looks like an IP address`}, {1, 37, `"0x7f.1" looks like an IP address`}, {1, 55, `empty label`}}},
		{"URL as domain", "domains: [{domain: \"https://a.com/x\"}]\n", []wantErr{{1, 20, `a domain has no scheme, port or path`}}},
		{"port in domain", "domains: [{domain: \"a.com:443\"}]\n", []wantErr{{1, 20, `use ports: for ports`}}},
		{"empty label", "domains: [{domain: a..com}]\n", []wantErr{{1, 20, `empty label`}}},
		{"two trailing dots", "domains: [{domain: a.com..}]\n", []wantErr{{1, 20, `empty label`}}},
		{"bad characters", "domains: [{domain: \"a b.com\"}]\n", []wantErr{{1, 20, `not allowed`}}},
		{"label too long", "domains: [{domain: " + strings.Repeat("a", 64) + ".com}]\n", []wantErr{{1, 20, `label longer than 63`}}},
		{"hyphen edge", "domains: [{domain: -a.com}]\n", []wantErr{{1, 20, `starts or ends with '-'`}}},
		{"missing domain", "domains:\n  - alias: x\n", []wantErr{{2, 5, `domains[0].domain: domain is required`}}},
		{"alias domain", "domains: [{domain: x.devbox.local}]\n", []wantErr{{1, 20, `names under devbox.local are aliases`}}},

		// Duplicates, in every spelling.
		{"duplicate domain", "domains:\n  - domain: a.com\n  - domain: a.com\n", []wantErr{{3, 13, `duplicate domain "a.com" (already listed at domains[0], line 2)`}}},
		{"duplicate domain case", "domains:\n  - domain: A.com\n  - domain: a.COM\n", []wantErr{{3, 13, `duplicate domain "a.com"`}}},
		{"duplicate domain trailing dot", "domains:\n  - domain: a.com.\n  - domain: a.com\n", []wantErr{{3, 13, `duplicate domain "a.com"`}}},
		{"duplicate wildcard", "domains:\n  - domain: \"*.a.com\"\n  - domain: \"*.A.com.\"\n", []wantErr{{3, 13, `duplicate domain "*.a.com"`}}},
		{"duplicate even if disabled", "domains:\n  - domain: a.com\n    enabled: false\n  - domain: a.com\n", []wantErr{{4, 13, `duplicate domain`}}},
		{"colliding aliases", "domains:\n  - domain: a.com\n    alias: x\n  - domain: b.com\n    alias: x\n", []wantErr{{5, 12, `domains[1].alias: alias "x" collides with the one at domains[0], line 3`}}},
		{"bad alias", "domains: [{domain: a.com, alias: My_Alias}]\n", []wantErr{{1, 34, `invalid alias "My_Alias"`}}},
		{"alias with dot", "domains: [{domain: a.com, alias: a.b}]\n", []wantErr{{1, 34, `one DNS label`}}},
		{"root user with the host rootfs", "sandbox: {user: \"0:0\"}\n", []wantErr{{1, 17, `sandbox.user: user "0:0" is root`}}},
		{"root uid with the host rootfs", "sandbox: {user: \"000\"}\n", []wantErr{{1, 17, `is root (uid or gid 0)`}}},
		{"root gid with the host rootfs", "sandbox: {user: \"1000:0\", rootfs: host}\n", []wantErr{{1, 17, `is root (uid or gid 0)`}}},
		{"alias on wildcard", "domains: [{domain: \"*.a.com\", alias: x}]\n", []wantErr{{1, 38, `a wildcard domain cannot have an alias`}}},
		{"credential on wildcard", "domains:\n  - domain: \"*.azure.com\"\n    credential: {header: api-key, env: K}\n", []wantErr{{3, 17, `domains[0].credential: a credential cannot be on the wildcard entry "*.azure.com"`}}},

		// Ports.
		{"port zero", "domains: [{domain: a.com, ports: [0]}]\n", []wantErr{{1, 35, `domains[0].ports[0]: invalid port 0`}}},
		{"port too large", "domains: [{domain: a.com, ports: [443, 65536]}]\n", []wantErr{{1, 40, `domains[0].ports[1]: invalid port 65536`}}},
		{"negative port", "ip_ranges: [{cidr: 10.0.0.0/8, ports: [-1]}]\n", []wantErr{{1, 40, `ip_ranges[0].ports[0]: invalid port -1`}}},
		{"port as string", "domains: [{domain: a.com, ports: [\"443\"]}]\n", []wantErr{{1, 35, `expected an integer, got "443"`}}},
		{"port as float", "domains: [{domain: a.com, ports: [44.3]}]\n", []wantErr{{1, 35, `expected an integer`}}},
		{"ports as scalar", "domains: [{domain: a.com, ports: 443}]\n", []wantErr{{1, 34, `domains[0].ports: expected a list, got "443"`}}},

		// CIDRs.
		{"bad CIDR", "ip_ranges:\n  - cidr: 10.0.5.0/33\n", []wantErr{{2, 11, `invalid CIDR "10.0.5.0/33"`}}},
		{"CIDR garbage", "ip_ranges: [{cidr: database}]\n", []wantErr{{1, 20, `invalid CIDR "database": write it as 10.0.5.0/24`}}},
		{"CIDR host bits", "ip_ranges: [{cidr: 10.0.5.1/24}]\n", []wantErr{{1, 20, `host bits set (did you mean 10.0.5.0/24?)`}}},
		{"CIDR with zone", "ip_ranges: [{cidr: \"fe80::1%eth0\"}]\n", []wantErr{{1, 20, `invalid CIDR`}}},
		{"CIDR mapped", "ip_ranges: [{cidr: \"::ffff:10.0.0.0/104\"}]\n", []wantErr{{1, 20, `IPv4 form`}}},
		{"CIDR missing", "ip_ranges: [{ports: [80]}]\n", []wantErr{{1, 13, `invalid CIDR ""`}}},
		{"bad subnet pool", "sandbox: {subnet_pool: 10.209.0.0/30}\n", []wantErr{{1, 24, `invalid subnet pool`}}},
		{"IPv6 subnet pool", "sandbox: {subnet_pool: \"fd00::/64\"}\n", []wantErr{{1, 24, `invalid subnet pool`}}},

		// Credentials.
		{"credential without source", "domains:\n  - domain: a.com\n    credential:\n      header: Authorization\n", []wantErr{{4, 7, `domains[0].credential: set exactly one of env, file or secret (none is set)`}}},
		{"credential with two sources", "domains:\n  - domain: a.com\n    credential: {header: X, env: K, file: /k}\n", []wantErr{{3, 17, `set exactly one of env, file or secret (env and file are set)`}}},
		{"credential with three sources", "domains: [{domain: a.com, credential: {header: X, env: K, file: /k, secret: s}}]\n", []wantErr{{1, 39, `set exactly one of env, file or secret (env and file and secret are set)`}}},
		{"credential without header", "domains: [{domain: a.com, credential: {env: K}}]\n", []wantErr{{1, 39, `credential.header: header is required`}}},
		{"credential bad header", "domains: [{domain: a.com, credential: {header: \"X Key\", env: K}}]\n", []wantErr{{1, 48, `invalid header name "X Key"`}}},
		{"credential forbidden header", "domains: [{domain: a.com, credential: {header: Proxy-Authorization, env: K}}]\n", []wantErr{{1, 48, `cannot carry a credential`}}},
		{"credential host header", "domains: [{domain: a.com, credential: {header: host, env: K}}]\n", []wantErr{{1, 48, `cannot carry a credential`}}},
		{"credential format without value", "domains: [{domain: a.com, credential: {header: X, format: Bearer, env: K}}]\n", []wantErr{{1, 59, `must contain {value}`}}},
		{"credential format newline", "domains: [{domain: a.com, credential: {header: X, format: \"{value}\\nX-Evil: 1\", env: K}}]\n", []wantErr{{1, 59, `one line`}}},
		{"credential format NUL", "domains: [{domain: a.com, credential: {header: X, format: \"{value}\\0\", env: K}}]\n", []wantErr{{1, 59, `control characters`}}},

		// Rate limits and numbers.
		{"zero rate", "rate_limits:\n  default: {requests_per_minute: 0}\n", []wantErr{{2, 34, `rate_limits.default.requests_per_minute: must be greater than 0`}}},
		{"missing rate", "domains: [{domain: a.com, rate_limit: {burst_size: 5}}]\n", []wantErr{{1, 39, `requests_per_minute: must be greater than 0`}}},
		{"negative burst", "dns: {rate_limit: {requests_per_minute: 5, burst_size: -1}}\n", []wantErr{{1, 56, `dns.rate_limit.burst_size: must not be negative`}}},
		{"rate as string", "rate_limits: {default: {requests_per_minute: many}}\n", []wantErr{{1, 46, `expected a number, got "many"`}}},
		{"label length", "dns: {tunneling: {max_label_length: 64}}\n", []wantErr{{1, 37, `must be between 1 and 63`}}},
		{"name length", "dns: {tunneling: {max_name_length: 300}}\n", []wantErr{{1, 36, `must be between 1 and 253`}}},
		{"entropy", "dns: {tunneling: {max_entropy: 9}}\n", []wantErr{{1, 32, `between 0 and 8`}}},
		{"distinct names", "dns: {tunneling: {distinct_names_per_hour: -2}}\n", []wantErr{{1, 44, `or -1 to disable`}}},
		{"max tunnels", "proxy: {max_tunnels: -1}\n", []wantErr{{1, 22, `must be positive`}}},
		{"cpus", "sandbox: {resources: {cpus: 0.001}}\n", []wantErr{{1, 29, `between 0.01 and 1024`}}},
		{"pids", "sandbox: {resources: {pids: 4}}\n", []wantErr{{1, 29, `at least 8`}}},
		{"integer out of range", "proxy: {max_tunnels: 99999999999999999999}\n", []wantErr{{1, 22, `max_tunnels: expected an integer`}}},
		{"float inf", "sandbox: {resources: {cpus: .inf}}\n", []wantErr{{1, 29, `invalid number`}}},

		// Other values.
		{"bad upstream", "dns: {upstream: [dns.google]}\n", []wantErr{{1, 18, `dns.upstream[0]: invalid address "dns.google"`}}},
		{"upstream port 0", "dns: {upstream: [\"1.1.1.1:0\"]}\n", []wantErr{{1, 18, `port 0`}}},
		{"bad upstream proxy", "proxy: {upstream_proxy: \"corp:3128\"}\n", []wantErr{{1, 25, `invalid upstream proxy`}}},
		{"bad user", "sandbox: {user: root}\n", []wantErr{{1, 17, `invalid user "root"`}}},
		{"bad hostname", "sandbox: {hostname: \"my box\"}\n", []wantErr{{1, 21, `invalid hostname`}}},
		{"bad env name", "sandbox: {env: {\"A=B\": x}}\n", []wantErr{{1, 16, `invalid variable name "A=B"`}}},
		{"bad control plane", "control_plane: {url: cp.example.com}\n", []wantErr{{1, 22, `invalid URL "cp.example.com"`}}},
		{"bad admin listen", "admin: {listen: localhost:8081}\n", []wantErr{{1, 17, `admin.listen: invalid address`}}},
		{"public admin without TLS", "admin: {listen: \"0.0.0.0:8081\"}\n", []wantErr{{1, 17, `not a loopback address`}}},
		{"half TLS", "admin: {tls_cert: /c}\n", []wantErr{{1, 8, `set both tls_cert and tls_key`}}},
		{"bad path pattern", "domains: [{domain: a.com, allowed_paths: [v1/*]}]\n", []wantErr{{1, 43, `domains[0].allowed_paths[0]: path pattern "v1/*" must start with /`}}},
		{"star inside pattern", "domains: [{domain: a.com, denied_paths: [\"/a/*/b\"]}]\n", []wantErr{{1, 42, `'*' is allowed only at the end`}}},
		{"query in pattern", "domains: [{domain: a.com, denied_paths: [\"/a?b=1\"]}]\n", []wantErr{{1, 42, `query strings`}}},
		{"ambiguous pattern", "domains: [{domain: a.com, denied_paths: [\"/a%2fb\"]}]\n", []wantErr{{1, 42, `ambiguous path encoding`}}},

		// Type errors.
		{"list for mapping", "dns:\n  - upstream: 1.1.1.1\n", []wantErr{{2, 3, `dns: expected a mapping, got a list`}}},
		{"scalar for mapping", "rate_limits: 120\n", []wantErr{{1, 14, `rate_limits: expected a mapping, got "120"`}}},
		{"mapping for list", "domains:\n  domain: a.com\n", []wantErr{{2, 3, `domains: expected a list, got a mapping`}}},
		{"scalar for list", "domains: a.com\n", []wantErr{{1, 10, `domains: expected a list, got "a.com"`}}},
		{"list for string", "mode: [standalone]\n", []wantErr{{1, 7, `mode: expected a string, got a list`}}},
		{"string for bool", "domains: [{domain: a.com, read_only: yes}]\n", []wantErr{{1, 38, `expected true or false, got "yes"`}}},
		{"string for int", "sandbox: {resources: {pids: lots}}\n", []wantErr{{1, 29, `expected an integer, got "lots"`}}},
		{"mapping for scalar size", "egress_limits: {default: {a: 1}}\n", []wantErr{{1, 26, `expected a scalar value, got a mapping`}}},
		{"list for domain entry", "domains:\n  - [a.com]\n", []wantErr{{2, 5, `domains[0]: expected a mapping, got a list`}}},
		{"string for domain entry", "domains:\n  - a.com\n", []wantErr{{2, 5, `domains[0]: expected a mapping, got "a.com"`}}},
		{"top level list", "- domain: a.com\n", []wantErr{{1, 1, `expected a mapping, got a list`}}},
		{"top level scalar", "hello\n", []wantErr{{1, 1, `expected a mapping, got "hello"`}}},
		{"non-string key", "sandbox:\n  env: {[a]: b}\n", []wantErr{{2, 9, `keys must be strings`}}},
		{"bad merge", "domains:\n  - <<: 5\n    domain: a.com\n", []wantErr{{2, 9, `<< must merge a mapping`}}},

		// Documents and syntax.
		{"two documents", "mode: standalone\n---\nmode: connected\n", []wantErr{{2, 1, `more than one YAML document`}}},
		{"three documents", "mode: standalone\n---\n---\ndomains: []\n", []wantErr{{3, 1, `more than one YAML document`}}},
		{"syntax error", "domains:\n  - domain: a.com\n   alias: x\n", []wantErr{{3, 1, `invalid YAML:`}}},
		{"unclosed flow", "domains: [{domain: a.com}\nmode: x\n", []wantErr{{1, 1, `invalid YAML:`}}},
		{"bad indentation deep in a block", "mode: standalone\ndomains:\n  - domain: a.com\n    alias: x\n  - domain: b.com\n    ports: [443]\n   read_only: true\n", []wantErr{{7, 1, `invalid YAML`}}},
		{"tab indentation", "dns:\n\tupstream: [1.1.1.1]\n", []wantErr{{2, 1, `invalid YAML: found character that cannot start any token`}}},
		{"syntax error on line 1", "{", []wantErr{{1, 1, `invalid YAML: did not find expected node content`}}},
		{"syntax error in second document", "mode: standalone\n---\n: : [\n", []wantErr{{3, 1, `invalid YAML`}}},
		{"control character", "mode: standalone\nenforcement: en\x01force\n", []wantErr{{2, 16, `invalid YAML: control characters are not allowed`}}},
		{"invalid UTF-8", "mode: standalone\n# caf\xe9\n", []wantErr{{2, 6, `UTF-8 octet`}}},

		// Several errors at once, in file order.
		{"several", "domains:\n  - domain: \"*.com\"\n    timeout: soon\n  - domain: b.com\n    ports: [0]\nmode: x\n", []wantErr{
			{2, 13, `invalid wildcard`}, {3, 14, `invalid duration "soon"`}, {5, 13, `invalid port 0`}, {6, 7, `invalid value "x"`}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			es := parseErrors(t, c.src)
			if len(es) != len(c.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(c.want), es)
			}
			for i, w := range c.want {
				e := es[i]
				if e.File != "test.yaml" || e.Line != w.line || e.Col != w.col || !strings.Contains(e.Error(), w.msg) {
					t.Errorf("error %d = %q (line %d col %d)\nwant %d:%d: ...%s...", i, e.Error(), e.Line, e.Col, w.line, w.col, w.msg)
				}
				prefix := fmt.Sprintf("test.yaml:%d:%d: ", w.line, w.col)
				if !strings.HasPrefix(e.Error(), prefix) {
					t.Errorf("error %d = %q, want prefix %q", i, e.Error(), prefix)
				}
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	es := parseErrors(t, strings.Repeat("#", MaxFileSize+1))
	if !strings.Contains(es.Error(), "larger than 4 MiB") {
		t.Errorf("large file: %v", es)
	}
	// Billion laughs: aliases that expand exponentially must be cut off.
	var b strings.Builder
	b.WriteString("x0: &a0 [" + strings.Repeat("1,", 9) + "1]\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&b, "x%d: &a%d [", i, i)
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	src := "sandbox:\n  env:\n" + strings.ReplaceAll(strings.TrimSpace(strings.ReplaceAll(b.String(), "\n", "\n    ")), "x", "    x")
	start := time.Now()
	_, err := Parse("test.yaml", []byte(src))
	if err == nil {
		t.Fatal("billion laughs accepted")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("billion laughs took %v", d)
	}
	// The same with merge keys.
	var m strings.Builder
	m.WriteString("domains:\n  - &m0 {domain: a0.com}\n")
	for i := 1; i < 20; i++ {
		fmt.Fprintf(&m, "  - &m%d\n    <<: [", i)
		for j := 0; j < 10; j++ {
			if j > 0 {
				m.WriteString(", ")
			}
			fmt.Fprintf(&m, "*m%d", i-1)
		}
		fmt.Fprintf(&m, "]\n    domain: a%d.com\n", i)
	}
	start = time.Now()
	Parse("test.yaml", []byte(m.String())) //nolint:errcheck // only its duration matters
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("merge-key bomb took %v", d)
	}
}

func TestParseFileErrors(t *testing.T) {
	if _, err := ParseFile("testdata/does-not-exist.yaml"); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	dir := t.TempDir()
	path := dir + "/p.yaml"
	if err := os.WriteFile(path, []byte("mode: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	if err == nil || err.Error() != path+`:1:7: mode: invalid value "x": use one of standalone, connected` {
		t.Errorf("ParseFile error = %v", err)
	}
}

// Validate must be idempotent: a parsed policy validates again unchanged, and
// a Policy built in Go validates without a file.
func TestValidateAgain(t *testing.T) {
	p := mustParse(t, seedPolicy)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Lookup("api.openai.com") == nil {
		t.Fatal("index lost")
	}
	q := &Policy{Domains: []Domain{{Domain: "Example.com."}, {Domain: "*.com"}}}
	err := q.Validate()
	if err == nil || err.Error() != `domains[1].domain: invalid wildcard "*.com": "com" is a public suffix; name a registered domain, as in *.example.com` {
		t.Errorf("Validate without file: %v", err)
	}
	q.Domains = q.Domains[:1]
	if err := q.Validate(); err != nil || q.Lookup("EXAMPLE.COM") == nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestErrorFormat(t *testing.T) {
	cases := []struct {
		e    Error
		want string
	}{
		{Error{File: "f", Line: 1, Col: 2, Path: "a.b", Msg: "m"}, "f:1:2: a.b: m"},
		{Error{File: "f", Msg: "m"}, "f: m"},
		{Error{Path: "p", Msg: "m"}, "p: m"},
		{Error{Line: 3, Col: 4, Msg: "m"}, "3:4: m"},
	}
	for _, c := range cases {
		if got := c.e.Error(); got != c.want {
			t.Errorf("%+v.Error() = %q, want %q", c.e, got, c.want)
		}
	}
	if got := (Errors{{Msg: "a"}, {Msg: "b"}}).Error(); got != "a\nb" {
		t.Errorf("Errors.Error() = %q", got)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
