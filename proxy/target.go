package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/cagent-dev/cagent/netclass"
	"github.com/cagent-dev/cagent/policy"
)

// Decision codes, design.md section 5. They are the `error` field of denial
// bodies and events and the X-Cagent-Deny-Reason header.
const (
	codeDestination  = "destination_not_allowed"
	codePath         = "path_not_allowed"
	codeMethod       = "method_not_allowed"
	codeForbidden    = "forbidden_address"
	codeRateLimited  = "rate_limited"
	codeBudget       = "egress_budget_exceeded"
	codeUpstream     = "upstream_error"
	codeTimeout      = "upstream_timeout"
	codeBadRequest   = "bad_request"
	codeTooManyConns = "too_many_tunnels"
)

// errBadAuthority is wrapped by every parseAuthority failure.
var errBadAuthority = errors.New("invalid host")

// authority is a parsed destination: a normalized DNS name or an IP literal, and a port.
type authority struct {
	host string     // normalized name, or the IP's canonical string
	ip   netip.Addr // valid for IP literals
	port int
}

// hostport renders the authority for a URL or CONNECT line.
func (a authority) hostport() string {
	h := a.host
	if a.ip.Is6() {
		h = "[" + h + "]"
	}
	return h + ":" + strconv.Itoa(a.port)
}

// parseAuthority parses "host", "host:port", "[v6]" or "[v6]:port" from a
// CONNECT line or a Host header. defPort 0 means a port is required. It is
// strict: no userinfo, no zone, no empty or signed port, only names that
// NormalizeHost accepts, and IPv4 only in dotted-quad form (so "0x7f.1" or
// "2130706433" can never reach an address the policy did not name).
func parseAuthority(s string, defPort int) (authority, error) {
	if s == "" || len(s) > 300 {
		return authority{}, fmt.Errorf("%w: empty or too long", errBadAuthority)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '@' || c == '/' || c == '\\' || c == '?' || c == '#' || c == '%' {
			return authority{}, fmt.Errorf("%w: character %q not allowed", errBadAuthority, c)
		}
	}
	host, portStr := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return authority{}, fmt.Errorf("%w: missing ]", errBadAuthority)
		}
		host = s[1:end]
		rest := s[end+1:]
		switch {
		case rest == "":
		case rest[0] == ':':
			portStr = rest[1:]
			if portStr == "" {
				return authority{}, fmt.Errorf("%w: empty port", errBadAuthority)
			}
		default:
			return authority{}, fmt.Errorf("%w: text after ]", errBadAuthority)
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return authority{}, fmt.Errorf("%w: bad IPv6 literal", errBadAuthority)
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, portStr = s[:i], s[i+1:]
		if strings.IndexByte(host, ':') >= 0 {
			return authority{}, fmt.Errorf("%w: IPv6 literals need brackets", errBadAuthority)
		}
		if portStr == "" {
			return authority{}, fmt.Errorf("%w: empty port", errBadAuthority)
		}
	}
	port := defPort
	if portStr != "" {
		if len(portStr) > 5 {
			return authority{}, fmt.Errorf("%w: bad port", errBadAuthority)
		}
		n := 0
		for i := 0; i < len(portStr); i++ {
			c := portStr[i]
			if c < '0' || c > '9' {
				return authority{}, fmt.Errorf("%w: bad port", errBadAuthority)
			}
			n = n*10 + int(c-'0')
		}
		port = n
	}
	if port < 1 || port > 65535 {
		return authority{}, fmt.Errorf("%w: port missing or out of range", errBadAuthority)
	}
	if maybeIP(host) {
		if a, err := netip.ParseAddr(host); err == nil {
			if a.Zone() != "" {
				return authority{}, fmt.Errorf("%w: zoned address", errBadAuthority)
			}
			h := host // netip accepts IPv4 only in its canonical form
			if !a.Is4() {
				a = a.Unmap()
				h = a.String()
			}
			return authority{host: h, ip: a, port: port}, nil
		}
	}
	name, err := policy.NormalizeHost(host)
	if err != nil {
		return authority{}, fmt.Errorf("%w: %v", errBadAuthority, err)
	}
	if looksNumeric(name) {
		// "127.1" or "2130706433": not an IP to netip, but some stacks would
		// treat it as one. A real name never has an all-numeric last label.
		return authority{}, fmt.Errorf("%w: numeric name %q", errBadAuthority, name)
	}
	return authority{host: name, port: port}, nil
}

// maybeIP reports whether netip.ParseAddr could accept s: an IPv6 address
// has a colon, an IPv4 one only digits and dots. Names skip the parse (and
// its error, which allocates).
func maybeIP(s string) bool {
	if strings.IndexByte(s, ':') >= 0 {
		return true
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func looksNumeric(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if strings.HasPrefix(last, "0x") {
		return true
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return true
}

// denial is a refusal (or, in report mode, what would have been one).
type denial struct {
	code       string
	status     int
	reason     string
	rule       string
	retryAfter time.Duration
}

func (d *denial) Error() string { return d.code + ": " + d.reason }

// enforced reports whether d is enforced under pol. Forbidden addresses are
// refused even in report mode: report mode is for learning which names an
// agent needs, and SSRF into the data plane's network is never a policy choice.
func (d *denial) enforced(pol *policy.Policy) bool {
	return pol.Enforcing() || d.code == codeForbidden || d.code == codeBadRequest || d.code == codeTooManyConns
}

func deny(code string, status int, rule, format string, args ...any) *denial {
	return &denial{code: code, status: status, rule: rule, reason: fmt.Sprintf(format, args...)}
}

// dest is what a request or tunnel is allowed to reach, once matched.
type dest struct {
	auth  authority
	entry *policy.Domain  // for names
	rng   *policy.IPRange // for IP literals
	alias bool            // reached through <alias>.devbox.local

	// k and r, when set (state.nameDest), are what key and rule return:
	// strings made once per policy rather than several times per request.
	k, r string
}

// key names the policy entry for rate limits, budgets, transports and metrics.
func (d *dest) key() string {
	if d.k != "" {
		return d.k
	}
	switch {
	case d.entry != nil:
		return d.entry.Domain
	case d.rng != nil:
		return "ip:" + d.rng.CIDR
	}
	return "-"
}

// rule names the entry that allowed d, for events.
func (d *dest) rule() string {
	if d.r != "" {
		return d.r
	}
	switch {
	case d.entry != nil:
		return "domains " + d.entry.Domain
	case d.rng != nil:
		return "ip_ranges " + d.rng.CIDR
	}
	return ""
}

// matchDest finds the policy entry for a. It returns the dest even when
// denying, so report mode can go on with it.
func matchDest(pol *policy.Policy, a authority) (*dest, *denial) {
	d := new(dest)
	return d, matchDestInto(d, pol, a)
}

// matchDestInto is matchDest filling in a dest the caller allocated.
func matchDestInto(d *dest, pol *policy.Policy, a authority) *denial {
	*d = dest{auth: a}
	if a.ip.IsValid() {
		if netclass.Of(a.ip) == netclass.Metadata {
			return deny(codeForbidden, 403, "netclass metadata", "%s is a cloud metadata address, which is never reachable", a.host)
		}
		d.rng = pol.IPRangeFor(a.ip, a.port)
		if d.rng == nil {
			return deny(codeDestination, 403, "ip_ranges", "IP address %s port %d is not in ip_ranges; use the host name, or ask the operator to add the range", a.host, a.port)
		}
		return nil
	}
	if policy.IsAliasHost(a.host) {
		e := pol.LookupAlias(a.host)
		if e == nil {
			return deny(codeDestination, 403, "domains", "%s is not a configured alias", a.host)
		}
		d.entry, d.alias = e, true
		// The alias stands for https://<domain>/ on the default port.
		d.auth = authority{host: e.Domain, port: 443}
		if !e.PortAllowed(443) {
			return deny(codeDestination, 403, "domains "+e.Domain+" ports", "the alias %s goes to %s port 443, which the entry's ports do not allow", a.host, e.Domain)
		}
		return nil
	}
	d.entry = pol.Lookup(a.host)
	if d.entry == nil {
		return deny(codeDestination, 403, "domains", "%s is not in the allowlist; ask the operator to add it to domains", a.host)
	}
	if !d.entry.PortAllowed(a.port) {
		ports := "80 and 443"
		if len(d.entry.Ports) > 0 {
			ports = strings.Trim(fmt.Sprint(d.entry.Ports), "[]")
		}
		return deny(codeDestination, 403, "domains "+d.entry.Domain+" ports", "port %d is not allowed for %s (allowed: %s)", a.port, a.host, ports)
	}
	return nil
}

// checkRequest applies the method and path rules of d's entry.
func checkRequest(d *dest, method, escapedPath string) *denial {
	e := d.entry
	if e == nil {
		return nil
	}
	if !e.MethodAllowed(method) {
		return deny(codeMethod, 403, "domains "+e.Domain+" read_only", "%s is read-only: only GET, HEAD and OPTIONS are allowed, not %s", e.Domain, method)
	}
	if e.Credential != nil && (strings.EqualFold(method, "TRACE") || strings.EqualFold(method, "TRACK")) {
		// Servers answer TRACE by reflecting the request, injected
		// credential included.
		return deny(codeMethod, 403, "domains "+e.Domain+" credential", "%s is not allowed to %s: it would reflect the injected credential", method, e.Domain)
	}
	if e.HasPathRules() && dotParamSegment(escapedPath) {
		return deny(codePath, 403, "domains "+e.Domain+" paths", "the path has a dot segment with parameters (\"..;\"), which servers resolve differently; send it without")
	}
	ok, rule, err := e.CheckPath(escapedPath)
	if err != nil {
		return deny(codePath, 403, "domains "+e.Domain+" paths", "the path uses an ambiguous encoding (%v); send it without encoded slashes, NULs or double encoding", unwrapMsg(err))
	}
	if !ok {
		return deny(codePath, 403, "domains "+e.Domain+" "+rule, "the path is not allowed for %s by %s", e.Domain, rule)
	}
	return nil
}

// checkUpgrade limits protocol upgrades. After a 101 the connection is an
// opaque channel: h2c would carry whole HTTP/2 requests for any path and
// method under one rate-limit token, so it is refused everywhere; an entry
// with path rules allows only WebSocket (the upgrade request's path is what
// the rules check); a read-only entry allows no upgrade at all.
func checkUpgrade(d *dest, h http.Header) *denial {
	protos := upgradeProtocols(h)
	if len(protos) == 0 {
		return nil
	}
	rule := "upgrade"
	if d.entry != nil {
		rule = "domains " + d.entry.Domain
	}
	for _, p := range protos {
		if p == "h2c" {
			return deny(codeMethod, 403, rule, "h2c upgrades are not allowed through the proxy; send HTTP/1.1 requests (or HTTPS)")
		}
	}
	e := d.entry
	if e == nil {
		return nil
	}
	if e.ReadOnly {
		return deny(codeMethod, 403, rule+" read_only", "%s is read-only: protocol upgrades (WebSocket and others) are not allowed", e.Domain)
	}
	if e.HasPathRules() {
		for _, p := range protos {
			if p != "websocket" {
				return deny(codePath, 403, rule+" paths", "%s has path rules: only WebSocket upgrades are allowed, not %q", e.Domain, p)
			}
		}
	}
	return nil
}

// methodOverrideHeaders are honoured by some frameworks to replace the
// request method.
var methodOverrideHeaders = [...]string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// checkMethodOverride refuses, on read-only entries, a method-override
// header naming a method the entry does not allow: a framework that honours
// it would run a DELETE the proxy saw as a GET.
func checkMethodOverride(d *dest, h http.Header) *denial {
	e := d.entry
	if e == nil || !e.ReadOnly {
		return nil
	}
	for _, name := range methodOverrideHeaders {
		for _, v := range h.Values(name) {
			if m := strings.ToUpper(strings.TrimSpace(v)); !e.MethodAllowed(m) {
				return deny(codeMethod, 403, "domains "+e.Domain+" read_only", "%s is read-only: the %s header asks for %s, which is not allowed", e.Domain, name, m)
			}
		}
	}
	return nil
}

// upgradeProtocols returns the lowercased protocol names (without
// versions) of an Upgrade the Connection header asks for; as in
// net/http/httputil, an Upgrade header Connection does not name is dropped
// as hop-by-hop and does not count.
func upgradeProtocols(h http.Header) []string {
	named := false
	// Direct map reads: the keys are canonical, and Values would
	// canonicalize them again on every request.
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				named = true
			}
		}
	}
	if !named {
		return nil
	}
	var out []string
	for _, v := range h["Upgrade"] {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.ToLower(strings.TrimSpace(tok))
			if i := strings.IndexByte(tok, '/'); i >= 0 {
				tok = tok[:i]
			}
			if tok != "" {
				out = append(out, tok)
			}
		}
	}
	return out
}

func unwrapMsg(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// dotParamSegment reports a segment such as "..;x" or ".%3b": some servers
// (Tomcat, Jetty) drop the ";..." parameters and then resolve the dots, so
// such a path can climb out of a prefix the policy allowed.
func dotParamSegment(escaped string) bool {
	p, err := policy.NormalizePath(escaped)
	if err != nil {
		return false // CheckPath refuses it anyway
	}
	for _, seg := range strings.Split(p, "/") {
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			if base := seg[:i]; base == "." || base == ".." {
				return true
			}
		}
	}
	return false
}
