package policy

import (
	"net/netip"
	"strings"
)

type index struct {
	exact    map[string]*Domain
	wildcard map[string]*Domain // keyed by the name after "*."
	alias    map[string]*Domain
}

// Lookup returns the enabled entry that governs host (any case, optional
// trailing dot, Unicode or punycode), or nil. An exact entry wins over a
// wildcard; among wildcards the most specific wins. "*.example.com" does not
// match "example.com".
func (p *Policy) Lookup(host string) *Domain {
	if p == nil || p.index == nil {
		return nil
	}
	h, err := NormalizeHost(host)
	if err != nil {
		return nil
	}
	return p.LookupNormalized(h)
}

// LookupAlias returns the enabled entry for "<alias>.devbox.local" (any case,
// optional trailing dot), or nil. A bare alias ("openai") is not looked up.
func (p *Policy) LookupAlias(host string) *Domain {
	if p == nil || p.index == nil {
		return nil
	}
	h, err := NormalizeHost(host)
	if err != nil {
		return nil
	}
	a, ok := strings.CutSuffix(h, AliasSuffix)
	if !ok || strings.Contains(a, ".") {
		return nil
	}
	return p.index.alias[a]
}

// IsAliasHost reports whether host is under devbox.local.
func IsAliasHost(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return strings.HasSuffix(h, AliasSuffix)
}

// IsEnabled reports whether the entry is in force.
func (d *Domain) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

// PortAllowed reports whether port may be used with this entry.
func (d *Domain) PortAllowed(port int) bool {
	if len(d.Ports) == 0 {
		return port == 80 || port == 443
	}
	for _, p := range d.Ports {
		if p == port {
			return true
		}
	}
	return false
}

// MethodAllowed applies read_only.
func (d *Domain) MethodAllowed(method string) bool {
	if !d.ReadOnly {
		return true
	}
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return true
	}
	return false
}

// RateLimitFor returns the entry's rate limit, else the default, else nil (unlimited).
func (p *Policy) RateLimitFor(d *Domain) *RateLimit {
	if d != nil && d.RateLimit != nil {
		return d.RateLimit
	}
	return p.RateLimits.Default
}

// EgressLimitFor returns the entry's egress budget, else the default (0 = unlimited).
func (p *Policy) EgressLimitFor(d *Domain) Size {
	if d != nil && d.EgressLimit != nil {
		return *d.EgressLimit
	}
	return p.EgressLimits.Default
}

// TimeoutFor returns the entry's upstream timeout, else the proxy default.
func (p *Policy) TimeoutFor(d *Domain) Duration {
	if d != nil && d.Timeout > 0 {
		return d.Timeout
	}
	return p.Proxy.Timeout
}

// IPRangeFor returns the ip_ranges entry that allows addr:port, or nil.
func (p *Policy) IPRangeFor(addr netip.Addr, port int) *IPRange {
	addr = addr.Unmap()
	for i := range p.IPRanges {
		r := &p.IPRanges[i]
		if !r.prefix.IsValid() || !r.prefix.Contains(addr) {
			continue
		}
		if len(r.Ports) == 0 {
			return r
		}
		for _, q := range r.Ports {
			if q == port {
				return r
			}
		}
	}
	return nil
}

// Prefix returns the parsed CIDR (valid after Validate).
func (r *IPRange) Prefix() netip.Prefix { return r.prefix }

// Enforcing reports whether denials are enforced (false in report mode).
func (p *Policy) Enforcing() bool { return p.Enforcement != "report" }

// File returns the file the policy was parsed from, if any.
func (p *Policy) File() string { return p.file }
