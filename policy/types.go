// Package policy parses, validates and evaluates cagent.yaml, the policy file
// shared by the proxy, the DNS filter, the sandbox and the control plane.
package policy

import (
	"net/netip"
	"time"
)

// Version is the only policy schema version this build understands.
const Version = 1

// Policy is a parsed and validated cagent.yaml. Build one with Parse or
// ParseFile; a Policy obtained any other way must pass Validate before use.
type Policy struct {
	Version      int           `yaml:"version" json:"version,omitempty" desc:"schema version; 1 (the default)"`
	Mode         string        `yaml:"mode" json:"mode,omitempty" desc:"standalone (default) or connected" enum:"standalone,connected"`
	Enforcement  string        `yaml:"enforcement" json:"enforcement,omitempty" desc:"enforce (default) or report: allow, but log what would have been denied" enum:"enforce,report"`
	DNS          DNS           `yaml:"dns" json:"dns,omitempty"`
	RateLimits   RateLimits    `yaml:"rate_limits" json:"rate_limits,omitempty"`
	EgressLimits EgressLimits  `yaml:"egress_limits" json:"egress_limits,omitempty"`
	Proxy        Proxy         `yaml:"proxy" json:"proxy,omitempty"`
	Domains      []Domain      `yaml:"domains" json:"domains,omitempty"`
	IPRanges     []IPRange     `yaml:"ip_ranges" json:"ip_ranges,omitempty" desc:"IP-literal destinations allowed (e.g. an internal database); default none"`
	Sandbox      Sandbox       `yaml:"sandbox" json:"sandbox,omitempty"`
	ControlPlane *ControlPlane `yaml:"control_plane" json:"control_plane,omitempty" desc:"connected mode: where the control plane is"`
	Admin        Admin         `yaml:"admin" json:"admin,omitempty" desc:"local admin UI and API of cagent up"`
	Audit        Audit         `yaml:"audit" json:"audit,omitempty"`

	index *index    // built by Validate: host and alias lookup
	pos   positions // source positions by field path, when parsed from YAML
	file  string    // file name used in error messages
}

// DNS configures the DNS filter.
type DNS struct {
	Upstream  []string   `yaml:"upstream" json:"upstream,omitempty" desc:"upstream resolvers, IP or IP:port; default: the host's resolv.conf servers"`
	CacheTTL  Duration   `yaml:"cache_ttl" json:"cache_ttl,omitempty" desc:"cap on cached answers' TTL; integer seconds or a duration (default 300s)"`
	Answer    string     `yaml:"answer" json:"answer,omitempty" desc:"gateway (answer allowed names with the gateway address, default) or upstream (real addresses)" enum:"gateway,upstream"`
	Tunneling Tunneling  `yaml:"tunneling" json:"tunneling,omitempty"`
	RateLimit *RateLimit `yaml:"rate_limit" json:"rate_limit,omitempty" desc:"per-client query rate limit (default 1200/min, burst 200)"`
}

// Tunneling holds the DNS tunnelling heuristics.
type Tunneling struct {
	MaxLabelLength int     `yaml:"max_label_length" json:"max_label_length,omitempty" desc:"longest label allowed (default 63)"`
	MaxNameLength  int     `yaml:"max_name_length" json:"max_name_length,omitempty" desc:"longest name allowed, without the trailing dot (default 253)"`
	MaxEntropy     float64 `yaml:"max_entropy" json:"max_entropy,omitempty" desc:"Shannon entropy in bits per character above which a label of 16+ characters is refused (default 4.0)"`
	// DistinctNames is the per-client budget of distinct names under one
	// registered domain per rolling hour. 0 means the default (100); -1 disables.
	DistinctNames int `yaml:"distinct_names_per_hour" json:"distinct_names_per_hour,omitempty" desc:"per-client budget of distinct names under one registered domain per rolling hour (default 100; -1 disables)"`
}

// RateLimits holds the default per-domain rate limit.
type RateLimits struct {
	Default *RateLimit `yaml:"default" json:"default,omitempty"`
}

// RateLimit is a token bucket.
type RateLimit struct {
	RequestsPerMinute float64 `yaml:"requests_per_minute" json:"requests_per_minute" desc:"sustained rate"`
	BurstSize         int     `yaml:"burst_size" json:"burst_size,omitempty" desc:"bucket size (default: requests_per_minute/6, at least 1)"`
}

// EgressLimits holds the default per-domain egress byte budget.
type EgressLimits struct {
	Default Size `yaml:"default" json:"default,omitempty" desc:"bytes SENT upstream per domain per rolling hour; 0 = unlimited"`
}

// Proxy holds proxy limits and upstream settings (a cagent extension; all optional).
type Proxy struct {
	UpstreamProxy  string   `yaml:"upstream_proxy" json:"upstream_proxy,omitempty" desc:"http://host:port of a corporate proxy to send all egress through"`
	CABundle       string   `yaml:"ca_bundle" json:"ca_bundle,omitempty" desc:"PEM file of CAs trusted for upstream TLS instead of the system roots"`
	MaxHeaderBytes Size     `yaml:"max_header_bytes" json:"max_header_bytes,omitempty" desc:"largest request header block accepted (default 64KiB)"`
	MaxTunnels     int      `yaml:"max_tunnels" json:"max_tunnels,omitempty" desc:"concurrent CONNECT/TLS tunnels (default 4096)"`
	IdleTimeout    Duration `yaml:"idle_timeout" json:"idle_timeout,omitempty" desc:"close idle client connections and tunnels after this (default 5m)"`
	Timeout        Duration `yaml:"timeout" json:"timeout,omitempty" desc:"default upstream timeout for domains without one (default 60s)"`
}

// Domain is one allowlist entry.
type Domain struct {
	Domain       string      `yaml:"domain" json:"domain" desc:"exact name, or *.example.com for any subdomain (not the apex)"`
	Alias        string      `yaml:"alias" json:"alias,omitempty" desc:"http://ALIAS.devbox.local/... goes out as https://DOMAIN/..."`
	Ports        []int       `yaml:"ports" json:"ports,omitempty" desc:"ports allowed (default 80 and 443)" minimum:"1" maximum:"65535"`
	Timeout      Duration    `yaml:"timeout" json:"timeout,omitempty" desc:"upstream timeout, e.g. 120s"`
	ReadOnly     bool        `yaml:"read_only" json:"read_only,omitempty" desc:"only GET, HEAD and OPTIONS"`
	AllowedPaths []string    `yaml:"allowed_paths" json:"allowed_paths,omitempty" desc:"exact, /x/* (prefix /x/) or /x* (prefix /x); empty = all"`
	DeniedPaths  []string    `yaml:"denied_paths" json:"denied_paths,omitempty" desc:"same forms as allowed_paths; checked first"`
	RateLimit    *RateLimit  `yaml:"rate_limit" json:"rate_limit,omitempty"`
	EgressLimit  *Size       `yaml:"egress_limit" json:"egress_limit,omitempty" desc:"bytes sent upstream per rolling hour; 0 = unlimited"`
	TLSIntercept bool        `yaml:"tls_intercept" json:"tls_intercept,omitempty" desc:"terminate TLS with the data plane's CA (needed for path rules and credentials on HTTPS)"`
	AllowPrivate bool        `yaml:"allow_private" json:"allow_private,omitempty" desc:"allow private, loopback and link-local addresses for this name"`
	Credential   *Credential `yaml:"credential" json:"credential,omitempty"`
	Enabled      *bool       `yaml:"enabled" json:"enabled,omitempty" desc:"false disables the entry without deleting it"`

	// Parsed forms, filled by Validate.
	allowed []pathRule
	denied  []pathRule
}

// Credential is injected by the proxy into requests to its domain.
type Credential struct {
	Header string `yaml:"header" json:"header" desc:"header to set (replaced, never appended)"`
	Format string `yaml:"format" json:"format,omitempty" desc:"value template; {value} is the secret (default {value})"`
	Env    string `yaml:"env" json:"env,omitempty" desc:"take the value from this environment variable of the data plane"`
	File   string `yaml:"file" json:"file,omitempty" desc:"take the value from this file (trailing newline removed)"`
	Secret string `yaml:"secret" json:"secret,omitempty" desc:"take the value from the encrypted secret store (standalone) or the control plane"`
}

// IPRange allows IP-literal destinations.
type IPRange struct {
	CIDR  string `yaml:"cidr" json:"cidr"`
	Ports []int  `yaml:"ports" json:"ports,omitempty" desc:"ports allowed (default: all)" minimum:"1" maximum:"65535"`

	prefix netip.Prefix
}

// Sandbox configures cagent run and cagent up.
type Sandbox struct {
	Runtime    string            `yaml:"runtime" json:"runtime,omitempty" desc:"gvisor (runsc) or runc" enum:"gvisor,runc"`
	Rootfs     string            `yaml:"rootfs" json:"rootfs,omitempty" desc:"host (read-only view of the host's /usr, /bin, /lib, /etc) or a directory"`
	Workspace  string            `yaml:"workspace" json:"workspace,omitempty" desc:"directory mounted read-write at /workspace"`
	User       string            `yaml:"user" json:"user,omitempty" desc:"UID:GID the agent runs as (default 1000:1000)"`
	Hostname   string            `yaml:"hostname" json:"hostname,omitempty"`
	Resources  Resources         `yaml:"resources" json:"resources,omitempty"`
	Env        map[string]string `yaml:"env" json:"env,omitempty" desc:"extra environment variables for the agent"`
	SubnetPool string            `yaml:"subnet_pool" json:"subnet_pool,omitempty" desc:"pool of /30 sandbox subnets (default 10.209.0.0/16)"`
}

// Resources are the sandbox's cgroup limits.
type Resources struct {
	CPUs   float64 `yaml:"cpus" json:"cpus,omitempty"`
	Memory Size    `yaml:"memory" json:"memory,omitempty"`
	Pids   int     `yaml:"pids" json:"pids,omitempty"`
}

// ControlPlane configures connected mode.
type ControlPlane struct {
	URL       string `yaml:"url" json:"url"`
	TokenFile string `yaml:"token_file" json:"token_file,omitempty" desc:"file holding the agent token (or use --token / CAGENT_TOKEN)"`
	CAFile    string `yaml:"ca_file" json:"ca_file,omitempty" desc:"CA bundle for the control plane's TLS certificate"`
}

// Admin configures the local admin UI and API (cagent up).
type Admin struct {
	Listen  string `yaml:"listen" json:"listen,omitempty" desc:"address of the admin UI (default 127.0.0.1:8081); non-loopback requires tls_cert and tls_key"`
	TLSCert string `yaml:"tls_cert" json:"tls_cert,omitempty"`
	TLSKey  string `yaml:"tls_key" json:"tls_key,omitempty"`
}

// Audit configures audit log files.
type Audit struct {
	Retention Duration `yaml:"retention" json:"retention,omitempty" desc:"delete rotated audit files older than this (default 720h)"`
	MaxSize   Size     `yaml:"max_size" json:"max_size,omitempty" desc:"rotate a file when it reaches this size (default 64MiB)"`
}

// Duration is a time.Duration written as "120s" or as integer seconds.
type Duration time.Duration

// Size is a byte count written as 1048576, "10MiB", "10MB", "1.5GiB".
type Size int64
