package policy

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults applied by Validate to absent settings.
const (
	DefaultCacheTTL         = 300 * time.Second
	DefaultMaxLabelLength   = 63
	DefaultMaxNameLength    = 253
	DefaultMaxEntropy       = 4.0
	DefaultDistinctNames    = 100
	DefaultMaxHeaderBytes   = 64 << 10
	DefaultMaxTunnels       = 4096
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultUpstreamTimeout  = 60 * time.Second
	DefaultSubnetPool       = "10.209.0.0/16"
	DefaultUser             = "1000:1000"
	DefaultAdminListen      = "127.0.0.1:8081"
	DefaultAuditRetention   = 720 * time.Hour
	DefaultAuditMaxSize     = 64 << 20
	DefaultSandboxMemory    = 2 << 30
	DefaultSandboxPids      = 256
	DefaultSandboxCPUs      = 1
	defaultDNSQueriesPerMin = 1200
	defaultDNSBurst         = 200
)

// Compiled on first use, not at package initialisation: every command of
// the binary imports this package, and aliasRE alone (its bounded
// repetition expands into a large program) took ~0.5 ms of the start-up
// of each `cagent run`, which may never need it.
var (
	aliasRE  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`) })
	userRE   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9]{1,10}(:[0-9]{1,10})?$`) })
	headerRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$") })
)

// Validate checks the policy, fills in defaults, normalizes domain names and
// builds the lookup index. It returns Errors listing every problem.
func (p *Policy) Validate() error {
	v := &validator{p: p}
	v.run()
	if len(v.errs) > 0 {
		sortErrors(v.errs)
		return v.errs
	}
	return nil
}

type validator struct {
	p    *Policy
	errs Errors
}

func (v *validator) errorf(path, format string, args ...any) {
	e := &Error{File: v.p.file, Path: path, Msg: fmt.Sprintf(format, args...)}
	// Use the field's own position, else the closest parent's.
	for q := path; q != ""; q = parentPath(q) {
		if pos, ok := v.p.pos[q]; ok {
			e.Line, e.Col = pos.Line, pos.Col
			break
		}
	}
	v.errs = append(v.errs, e)
}

// where names a field for "already listed at ..." messages: its path, and its
// line when the policy came from a file.
func (v *validator) where(path, field string) string {
	if pos, ok := v.p.pos[path+"."+field]; ok {
		return fmt.Sprintf("%s, line %d", path, pos.Line)
	}
	return path
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func (v *validator) run() {
	p := v.p
	if p.Version == 0 {
		p.Version = Version
	} else if p.Version != Version {
		v.errorf("version", "unsupported policy version %d: this cagent understands version %d", p.Version, Version)
	}
	p.Mode = v.enum("mode", p.Mode, "standalone", "standalone", "connected")
	p.Enforcement = v.enum("enforcement", p.Enforcement, "enforce", "enforce", "report")
	v.dns()
	if p.RateLimits.Default != nil {
		v.rateLimit("rate_limits.default", p.RateLimits.Default)
	}
	v.proxy()
	v.domains()
	v.ipRanges()
	v.sandbox()
	v.controlPlane()
	v.admin()
	if p.Audit.Retention == 0 {
		p.Audit.Retention = Duration(DefaultAuditRetention)
	}
	if p.Audit.MaxSize == 0 {
		p.Audit.MaxSize = DefaultAuditMaxSize
	}
	if p.Mode == "connected" && p.ControlPlane == nil {
		v.errorf("mode", "mode connected needs control_plane.url (or --control-plane on the command line)")
	}
}

func (v *validator) enum(path, val, def string, allowed ...string) string {
	if val == "" {
		return def
	}
	for _, a := range allowed {
		if val == a {
			return val
		}
	}
	v.errorf(path, "invalid value %q: use one of %s", val, strings.Join(allowed, ", "))
	return val
}

func (v *validator) dns() {
	d := &v.p.DNS
	for i, u := range d.Upstream {
		if ap, err := ParseHostPort(u, 53); err != nil {
			v.errorf(fmt.Sprintf("dns.upstream[%d]", i), "%v", err)
		} else if ap.Port() == 0 {
			v.errorf(fmt.Sprintf("dns.upstream[%d]", i), "invalid address %q: port 0", u)
		}
	}
	if d.CacheTTL == 0 {
		d.CacheTTL = Duration(DefaultCacheTTL)
	}
	d.Answer = v.enum("dns.answer", d.Answer, "gateway", "gateway", "upstream")
	t := &d.Tunneling
	if t.MaxLabelLength == 0 {
		t.MaxLabelLength = DefaultMaxLabelLength
	} else if t.MaxLabelLength < 1 || t.MaxLabelLength > 63 {
		v.errorf("dns.tunneling.max_label_length", "must be between 1 and 63, got %d", t.MaxLabelLength)
	}
	if t.MaxNameLength == 0 {
		t.MaxNameLength = DefaultMaxNameLength
	} else if t.MaxNameLength < 1 || t.MaxNameLength > 253 {
		v.errorf("dns.tunneling.max_name_length", "must be between 1 and 253, got %d", t.MaxNameLength)
	}
	if t.MaxEntropy == 0 {
		t.MaxEntropy = DefaultMaxEntropy
	} else if t.MaxEntropy < 0 || t.MaxEntropy > 8 {
		v.errorf("dns.tunneling.max_entropy", "must be between 0 and 8 bits per character, got %g", t.MaxEntropy)
	}
	if t.DistinctNames == 0 {
		t.DistinctNames = DefaultDistinctNames
	} else if t.DistinctNames < -1 {
		v.errorf("dns.tunneling.distinct_names_per_hour", "must be positive, or -1 to disable, got %d", t.DistinctNames)
	}
	if d.RateLimit == nil {
		d.RateLimit = &RateLimit{RequestsPerMinute: defaultDNSQueriesPerMin, BurstSize: defaultDNSBurst}
	} else {
		v.rateLimit("dns.rate_limit", d.RateLimit)
	}
}

func (v *validator) rateLimit(path string, r *RateLimit) {
	if r.RequestsPerMinute <= 0 {
		v.errorf(path+".requests_per_minute", "must be greater than 0 (omit rate_limit for no limit)")
	}
	if r.BurstSize < 0 {
		v.errorf(path+".burst_size", "must not be negative")
	}
	if r.BurstSize == 0 {
		r.BurstSize = max(1, int(r.RequestsPerMinute/6))
	}
}

func (v *validator) proxy() {
	x := &v.p.Proxy
	if x.UpstreamProxy != "" {
		u, err := url.Parse(x.UpstreamProxy)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.errorf("proxy.upstream_proxy", "invalid upstream proxy %q: use http://host:port", x.UpstreamProxy)
		}
	}
	if x.MaxHeaderBytes == 0 {
		x.MaxHeaderBytes = DefaultMaxHeaderBytes
	} else if x.MaxHeaderBytes < 1024 || x.MaxHeaderBytes > 16<<20 {
		v.errorf("proxy.max_header_bytes", "must be between 1KiB and 16MiB")
	}
	if x.MaxTunnels == 0 {
		x.MaxTunnels = DefaultMaxTunnels
	} else if x.MaxTunnels < 0 {
		v.errorf("proxy.max_tunnels", "must be positive")
	}
	if x.IdleTimeout == 0 {
		x.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if x.Timeout == 0 {
		x.Timeout = Duration(DefaultUpstreamTimeout)
	}
}

func (v *validator) domains() {
	p := v.p
	idx := &index{exact: map[string]*Domain{}, wildcard: map[string]*Domain{}, alias: map[string]*Domain{}}
	seen := map[string]string{}
	aliases := map[string]string{}
	for i := range p.Domains {
		d := &p.Domains[i]
		path := fmt.Sprintf("domains[%d]", i)
		name, err := validatePattern(d.Domain)
		if err != nil {
			v.errorf(path+".domain", "%v", err)
			continue
		}
		d.Domain = name
		if prev, dup := seen[name]; dup {
			v.errorf(path+".domain", "duplicate domain %q (already listed at %s)", name, v.where(prev, "domain"))
		} else {
			seen[name] = path
		}
		if d.Alias != "" {
			if !aliasRE().MatchString(d.Alias) {
				v.errorf(path+".alias", "invalid alias %q: use lower-case letters, digits and '-' (one DNS label)", d.Alias)
			} else if strings.HasPrefix(name, "*.") {
				v.errorf(path+".alias", "a wildcard domain cannot have an alias: the alias needs one real host to go to")
			} else if prev, dup := aliases[d.Alias]; dup {
				v.errorf(path+".alias", "alias %q collides with the one at %s", d.Alias, v.where(prev, "alias"))
			} else {
				aliases[d.Alias] = path
			}
		}
		for j, port := range d.Ports {
			if port < 1 || port > 65535 {
				v.errorf(fmt.Sprintf("%s.ports[%d]", path, j), "invalid port %d", port)
			}
		}
		d.allowed, d.denied = nil, nil
		for j, raw := range d.AllowedPaths {
			r, err := parsePathRule(raw)
			if err != nil {
				v.errorf(fmt.Sprintf("%s.allowed_paths[%d]", path, j), "%v", err)
				continue
			}
			d.allowed = append(d.allowed, r)
		}
		for j, raw := range d.DeniedPaths {
			r, err := parsePathRule(raw)
			if err != nil {
				v.errorf(fmt.Sprintf("%s.denied_paths[%d]", path, j), "%v", err)
				continue
			}
			d.denied = append(d.denied, r)
		}
		if d.RateLimit != nil {
			v.rateLimit(path+".rate_limit", d.RateLimit)
		}
		if d.Credential != nil {
			v.credential(path+".credential", d.Credential)
			if w, ok := strings.CutPrefix(name, "*."); ok {
				// Anyone who can create a name under the wildcard (a cloud
				// resource, a Pages site) could have the agent send the key
				// there, and the agent never sees a credential value.
				v.errorf(path+".credential", "a credential cannot be on the wildcard entry %q: it would be sent to every name under %s, including names someone else can create; list each host that needs it as an exact entry", name, w)
			}
		}
		if !d.IsEnabled() {
			continue
		}
		if w, ok := strings.CutPrefix(name, "*."); ok {
			idx.wildcard[w] = d
		} else {
			idx.exact[name] = d
		}
		if d.Alias != "" {
			idx.alias[d.Alias] = d
		}
	}
	p.index = idx
}

func (v *validator) credential(path string, c *Credential) {
	if c.Header == "" {
		v.errorf(path+".header", "header is required")
	} else if !headerRE().MatchString(c.Header) {
		v.errorf(path+".header", "invalid header name %q", c.Header)
	} else if h := strings.ToLower(c.Header); h == "host" || h == "content-length" || h == "transfer-encoding" || h == "connection" || strings.HasPrefix(h, "proxy-") {
		v.errorf(path+".header", "header %q cannot carry a credential", c.Header)
	}
	if c.Format == "" {
		c.Format = "{value}"
	} else if !strings.Contains(c.Format, "{value}") {
		v.errorf(path+".format", "format %q must contain {value}", c.Format)
	}
	if strings.ContainsFunc(c.Format, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
		v.errorf(path+".format", "format must be one line without control characters")
	}
	var set []string
	for _, src := range []struct{ name, val string }{{"env", c.Env}, {"file", c.File}, {"secret", c.Secret}} {
		if src.val != "" {
			set = append(set, src.name)
		}
	}
	switch len(set) {
	case 0:
		v.errorf(path, "set exactly one of env, file or secret (none is set)")
	case 1:
	default:
		v.errorf(path, "set exactly one of env, file or secret (%s are set)", strings.Join(set, " and "))
	}
}

func (v *validator) ipRanges() {
	for i := range v.p.IPRanges {
		r := &v.p.IPRanges[i]
		path := fmt.Sprintf("ip_ranges[%d]", i)
		pfx, err := netip.ParsePrefix(r.CIDR)
		if err != nil {
			if a, aerr := netip.ParseAddr(r.CIDR); aerr == nil && a.Zone() == "" {
				pfx = netip.PrefixFrom(a, a.BitLen())
			} else {
				v.errorf(path+".cidr", "invalid CIDR %q: write it as 10.0.5.0/24", r.CIDR)
				continue
			}
		}
		if pfx.Addr().Is4In6() {
			v.errorf(path+".cidr", "invalid CIDR %q: write IPv4-mapped ranges in IPv4 form", r.CIDR)
			continue
		}
		if pfx != pfx.Masked() {
			v.errorf(path+".cidr", "invalid CIDR %q: host bits set (did you mean %s?)", r.CIDR, pfx.Masked())
			continue
		}
		r.prefix = pfx
		for j, port := range r.Ports {
			if port < 1 || port > 65535 {
				v.errorf(fmt.Sprintf("%s.ports[%d]", path, j), "invalid port %d", port)
			}
		}
	}
}

func (v *validator) sandbox() {
	s := &v.p.Sandbox
	if s.Runtime != "" {
		v.enum("sandbox.runtime", s.Runtime, "", "gvisor", "runc")
	}
	if s.Rootfs == "" {
		s.Rootfs = "host"
	}
	if s.User == "" {
		s.User = DefaultUser
	} else if !userRE().MatchString(s.User) {
		v.errorf("sandbox.user", "invalid user %q: use UID or UID:GID", s.User)
	} else if uid, gid, _ := strings.Cut(s.User, ":"); s.Rootfs == "host" && (strings.Trim(uid, "0") == "" || strings.Trim(gid, "0") == "" && gid != "") {
		// Without user namespaces, uid or gid 0 inside owns the host's
		// root files: capabilities dropped or not, it could read SSH host
		// keys and /etc/shadow through the read-only host rootfs.
		v.errorf("sandbox.user", "user %q is root (uid or gid 0), which can read root-only host files through the host rootfs (SSH host keys, /etc/shadow); use an unprivileged user such as %q, or a rootfs directory of the sandbox's own", s.User, DefaultUser)
	}
	if s.Hostname != "" && !aliasRE().MatchString(s.Hostname) {
		v.errorf("sandbox.hostname", "invalid hostname %q", s.Hostname)
	}
	r := &s.Resources
	if r.CPUs == 0 {
		r.CPUs = DefaultSandboxCPUs
	} else if r.CPUs < 0.01 || r.CPUs > 1024 {
		v.errorf("sandbox.resources.cpus", "must be between 0.01 and 1024")
	}
	if r.Memory == 0 {
		r.Memory = DefaultSandboxMemory
	} else if r.Memory < 16<<20 {
		v.errorf("sandbox.resources.memory", "must be at least 16MiB")
	}
	if r.Pids == 0 {
		r.Pids = DefaultSandboxPids
	} else if r.Pids < 8 {
		v.errorf("sandbox.resources.pids", "must be at least 8")
	}
	if s.SubnetPool == "" {
		s.SubnetPool = DefaultSubnetPool
	} else if pfx, err := netip.ParsePrefix(s.SubnetPool); err != nil || !pfx.Addr().Is4() || pfx.Bits() > 29 || pfx != pfx.Masked() {
		v.errorf("sandbox.subnet_pool", "invalid subnet pool %q: an IPv4 CIDR of /29 or larger, e.g. 10.209.0.0/16", s.SubnetPool)
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.errorf("sandbox.env", "invalid variable name %q", k)
		}
	}
}

func (v *validator) controlPlane() {
	c := v.p.ControlPlane
	if c == nil {
		return
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errorf("control_plane.url", "invalid URL %q: use https://host[:port]", c.URL)
	}
}

func (v *validator) admin() {
	a := &v.p.Admin
	if a.Listen == "" {
		a.Listen = DefaultAdminListen
	}
	hp, err := ParseHostPort(a.Listen, 0)
	if err != nil {
		v.errorf("admin.listen", "%v", err)
		return
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		v.errorf("admin", "set both tls_cert and tls_key, or neither")
	}
	if !hp.Addr().IsLoopback() && a.TLSCert == "" {
		v.errorf("admin.listen", "%s is not a loopback address: a reachable admin UI needs tls_cert and tls_key", a.Listen)
	}
}

// ParseHostPort parses "IP" or "IP:port" (IPv6 in brackets with a port);
// defPort is used when no port is given (0: a port is required).
func ParseHostPort(s string, defPort uint16) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	if defPort != 0 {
		if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
			return netip.AddrPortFrom(a.Unmap(), defPort), nil
		}
		return netip.AddrPort{}, fmt.Errorf("invalid address %q: use an IP or IP:port", s)
	}
	return netip.AddrPort{}, fmt.Errorf("invalid address %q: use IP:port, e.g. 127.0.0.1:%s", s, strconv.Itoa(8081))
}
