package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/netclass"
	"github.com/cagent-dev/cagent/policy"
)

// Decision codes (audit event "error" and the metrics' error label). The
// first ones are design.md section 5's; the rest are DNS-specific.
const (
	errNotAllowed     = "destination_not_allowed"
	errForbiddenAddr  = "forbidden_address"
	errTunneling      = "dns_tunneling_suspected"
	errRateLimited    = "rate_limited"
	errUpstream       = "upstream_error"
	errUpstreamTO     = "upstream_timeout"
	errQtypeRefused   = "query_type_refused"
	errMalformed      = "malformed_query"
	errNotImplemented = "not_implemented"
)

// query is one query on its way through the filter.
type query struct {
	f      *Filter
	st     *state
	client netip.Addr
	req    *dns.Msg
	resp   *dns.Msg
	ev     audit.Event
	// ede is the Extended DNS Error attached to the reply (RFC 8914), when
	// the client speaks EDNS0.
	edeCode uint16
	edeText string
	wire    []byte    // the query as received
	fastOK  *fastInfo // set when the answer may become a fast-path template
}

// handle answers one query in wire format. It returns the reply in wire
// format, or nil when the message deserves no reply (a response, or bytes
// too short to carry a DNS header). It never panics on any input.
func (f *Filter) handle(client netip.Addr, proto string, wire []byte) []byte {
	q := &query{f: f, st: f.state.Load(), client: client}
	q.ev = audit.Event{Type: audit.TypeDNS, Agent: f.cfg.Agent, Decision: audit.Allow}
	if client.IsValid() {
		q.ev.Client = client.String()
	}
	req := new(dns.Msg)
	if err := req.Unpack(wire); err != nil {
		if len(wire) < 12 || wire[2]&0x80 != 0 {
			f.met.dropped.Inc()
			return nil
		}
		// Echo the header only: a FORMERR for whatever could not be parsed.
		resp := new(dns.Msg)
		resp.Id = uint16(wire[0])<<8 | uint16(wire[1])
		resp.Response = true
		resp.Opcode = int(wire[2]>>3) & 0xF
		resp.Rcode = dns.RcodeFormatError
		q.resp = resp
		q.ev.Decision = audit.Deny
		q.ev.Error = errMalformed
		q.ev.Reason = "the query could not be parsed: " + err.Error()
		return q.finish(proto, nil)
	}
	if req.Response {
		f.met.dropped.Inc()
		return nil
	}
	q.req = req
	q.resp = new(dns.Msg)
	q.resp.SetReply(req)
	q.resp.RecursionAvailable = true
	if len(req.Question) != 1 {
		q.resp.Question = nil
	}
	q.wire = wire
	q.answer()
	out := q.finish(proto, req.IsEdns0())
	q.remember(out)
	return out
}

// refuse ends the query with rcode and an EDE (deny decision).
func (q *query) refuse(rcode int, ede uint16, code, rule, reason string) {
	q.resp.Rcode = rcode
	q.resp.Answer = nil
	q.ev.Decision = audit.Deny
	q.ev.Error, q.ev.Rule, q.ev.Reason = code, rule, reason
	q.edeCode, q.edeText = ede, reason
}

// policyDeny records a policy denial. In enforce mode it ends the query
// (the caller returns); in report mode it notes the first denial and the
// query goes on as if it had been allowed.
func (q *query) policyDeny(rcode int, code, rule, reason string) (stop bool) {
	if q.st.p.Enforcing() {
		q.refuse(rcode, dns.ExtendedErrorCodeBlocked, code, rule, reason)
		return true
	}
	if q.ev.Decision != audit.Report {
		q.ev.Decision = audit.Report
		q.ev.Error, q.ev.Rule, q.ev.Reason = code, rule, "report mode, would have been denied: "+reason
	}
	return false
}

// allowNote sets the reason of an allowed query (not overriding a report).
func (q *query) allowNote(rule, reason string) {
	if q.ev.Decision == audit.Report {
		return
	}
	q.ev.Rule, q.ev.Reason = rule, reason
}

func (q *query) answer() {
	f, st, req := q.f, q.st, q.req
	p := st.p
	// The rate limit comes first so a flood costs as little as possible.
	if ok, retry := f.limiter.Allow(q.clientKey(), p.DNS.RateLimit); !ok {
		q.refuse(dns.RcodeRefused, dns.ExtendedErrorCodeBlocked, errRateLimited, "dns.rate_limit",
			fmt.Sprintf("query rate limit of %g per minute exceeded; retry after %s", p.DNS.RateLimit.RequestsPerMinute, retry))
		if len(req.Question) == 1 {
			q.ev.QName, q.ev.QType = displayName(req.Question[0].Name), qtypeString(req.Question[0].Qtype)
		}
		return
	}
	if req.Opcode != dns.OpcodeQuery {
		q.refuse(dns.RcodeNotImplemented, dns.ExtendedErrorCodeNotSupported, errNotImplemented, "",
			fmt.Sprintf("opcode %s is not supported: only standard queries are", opcodeString(req.Opcode)))
		return
	}
	if len(req.Question) != 1 {
		q.refuse(dns.RcodeRefused, dns.ExtendedErrorCodeOther, errMalformed, "",
			fmt.Sprintf("a query must ask exactly one question; this one asked %d", len(req.Question)))
		return
	}
	question := req.Question[0]
	q.ev.QName, q.ev.QType = displayName(question.Name), qtypeString(question.Qtype)
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		q.refuse(dns.RcodeBadVers, 0, errMalformed, "", fmt.Sprintf("EDNS version %d is not supported, only 0", opt.Version()))
		q.edeText = ""
		return
	}
	if question.Qclass != dns.ClassINET {
		q.refuse(dns.RcodeRefused, dns.ExtendedErrorCodeNotSupported, errQtypeRefused, "",
			fmt.Sprintf("query class %s is not served: only IN", dns.Class(question.Qclass)))
		return
	}
	qtype := question.Qtype
	switch qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeCNAME, dns.TypeHTTPS, dns.TypeSVCB:
	default:
		q.refuse(dns.RcodeRefused, dns.ExtendedErrorCodeBlocked, errQtypeRefused, "",
			fmt.Sprintf("query type %s is not served: only A, AAAA and CNAME (TXT, NULL and ANY are DNS tunnelling carriers)", qtypeString(qtype)))
		return
	}

	host, herr := policy.NormalizeHost(question.Name)
	if herr == nil {
		q.ev.QName = host
	}
	if v, bad := checkTunnel(question.Name, host, &p.DNS.Tunneling); bad {
		if q.policyDeny(dns.RcodeRefused, errTunneling, v.rule, v.reason) {
			return
		}
	}
	if herr != nil {
		q.refuse(dns.RcodeNameError, dns.ExtendedErrorCodeBlocked, errNotAllowed, "",
			"not a valid host name (letters, digits, '-' and '_' only), so no policy entry can allow it")
		return
	}

	if policy.IsAliasHost(host) || host == policy.AliasSuffix[1:] {
		q.alias(host, qtype)
		return
	}

	d := p.LookupNormalized(host)
	if d == nil {
		if q.policyDeny(dns.RcodeNameError, errNotAllowed, "",
			fmt.Sprintf("%s is not in the policy's domains; ask the operator to add it to domains: in the policy", host)) {
			return
		}
	} else {
		q.allowNote(d.Domain, "allowed by the policy entry "+d.Domain)
	}

	// Types answered here, without asking upstream: nothing leaves the box.
	gateway := p.DNS.Answer == "gateway"
	if qtype == dns.TypeAAAA || qtype == dns.TypeHTTPS || qtype == dns.TypeSVCB || qtype == dns.TypeCNAME && gateway {
		q.fastOK = &fastInfo{}
	}
	switch {
	case qtype == dns.TypeAAAA:
		q.allowNote(ruleOf(d), "AAAA is answered empty: sandboxes are IPv4-only")
		return
	case qtype == dns.TypeHTTPS || qtype == dns.TypeSVCB:
		q.allowNote(ruleOf(d), qtypeString(qtype)+" is answered empty: connection hints would bypass the gateway")
		return
	case qtype == dns.TypeCNAME && gateway:
		q.allowNote(ruleOf(d), "CNAME is answered empty in gateway mode: the name itself resolves to the gateway")
		return
	}

	// The name will be asked upstream: charge it to the client's budget.
	reg := policy.RegisteredDomain(host)
	if limit := p.DNS.Tunneling.DistinctNames; limit >= 0 {
		r := f.budgets.admit(q.clientKey(), reg, host, limit, f.now())
		if !r.ok {
			reason := fmt.Sprintf("more than %d distinct names under %s in the last hour (possible DNS tunnelling); names already asked for still resolve", limit, reg)
			if r.first {
				q.budgetExhausted(reg, limit)
			}
			if q.policyDeny(dns.RcodeRefused, errTunneling, "dns.tunneling.distinct_names_per_hour", reason) {
				return
			}
		}
	}

	c, hit, err := f.lookup(st, host, qtype)
	if err != nil {
		code, ede := errUpstream, uint16(dns.ExtendedErrorCodeNetworkError)
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			code, ede = errUpstreamTO, dns.ExtendedErrorCodeNoReachableAuthority
		}
		q.resp.Rcode = dns.RcodeServerFailure
		q.ev.Error, q.ev.Reason = code, "no upstream answered: "+err.Error()
		q.edeCode, q.edeText = ede, "no upstream resolver answered"
		return
	}
	switch c.rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		q.resp.Rcode = c.rcode
		q.ev.Error, q.ev.Reason = errUpstream, "upstream answered "+dns.RcodeToString[c.rcode]
		return
	}
	if hit {
		// Asked before: worth a template. (Names asked once, the bulk of
		// a tunnelling or crawling stream, never make one.)
		q.fastOK = &fastInfo{entry: c, charge: true, reg: reg, host: host}
	}
	if gateway {
		q.gatewayAnswer(c, host, qtype, d)
	} else {
		q.upstreamAnswer(c, host, qtype, d)
	}
}

// alias answers <alias>.devbox.local with the gateway.
func (q *query) alias(host string, qtype uint16) {
	d := q.st.p.LookupAlias(host)
	if d == nil {
		name, _ := strings.CutSuffix(host, policy.AliasSuffix)
		q.refuse(dns.RcodeNameError, dns.ExtendedErrorCodeBlocked, errNotAllowed, "",
			fmt.Sprintf("no policy entry has alias %q", name))
		return
	}
	if !q.f.cfg.Gateway.IsValid() {
		q.refuse(dns.RcodeServerFailure, dns.ExtendedErrorCodeNotReady, errUpstream, d.Domain,
			"aliases resolve to the gateway, and this filter has no gateway address configured")
		q.ev.Decision = audit.Allow
		return
	}
	q.allowNote(d.Domain, "alias of "+d.Domain)
	q.fastOK = &fastInfo{}
	if qtype == dns.TypeA {
		q.resp.Answer = append(q.resp.Answer, q.gatewayRR(localTTL))
	}
}

func (q *query) gatewayRR(ttl uint32) dns.RR {
	a := q.f.cfg.Gateway.As4()
	return &dns.A{
		Hdr: dns.RR_Header{Name: q.req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
		A:   a[:],
	}
}

// gatewayAnswer answers an allowed A query with the gateway when the name
// has an address upstream (the proxy behind the gateway connects to it).
func (q *query) gatewayAnswer(c *cached, host string, qtype uint16, d *policy.Domain) {
	if c.rcode == dns.RcodeNameError {
		q.resp.Rcode = dns.RcodeNameError
		q.allowNote(ruleOf(d), "the name does not exist upstream")
		return
	}
	_, addrs, _ := walkChain(c.answer, host, dns.TypeA)
	if len(addrs) == 0 {
		q.allowNote(ruleOf(d), "the name has no IPv4 address upstream")
		return
	}
	q.resp.Answer = append(q.resp.Answer, q.gatewayRR(c.remaining(q.f.now())))
}

// upstreamAnswer serves the real answer, after checking every name of the
// CNAME chain against the policy and removing forbidden addresses.
func (q *query) upstreamAnswer(c *cached, host string, qtype uint16, d *policy.Domain) {
	p := q.st.p
	if c.rcode == dns.RcodeNameError {
		q.resp.Rcode = dns.RcodeNameError
		q.allowNote(ruleOf(d), "the name does not exist upstream")
		return
	}
	cnames, addrs, _ := walkChain(c.answer, host, qtype)
	// Every name the chain passes through must be allowed too: otherwise an
	// allowed name could CNAME to any address the policy denies.
	allowPrivate := d != nil && d.AllowPrivate
	for _, cn := range cnames {
		target, err := policy.NormalizeHost(cn.Target)
		td := p.LookupNormalized(target)
		if err != nil || td == nil {
			if q.policyDeny(dns.RcodeNameError, errNotAllowed, "",
				fmt.Sprintf("%s is an alias (CNAME) of %s, which is not in the policy's domains; allow it too, or use dns.answer: gateway", host, strings.TrimSuffix(cn.Target, "."))) {
				return
			}
			allowPrivate = false
			continue
		}
		allowPrivate = allowPrivate && td.AllowPrivate
	}
	ttl := c.remaining(q.f.now())
	var kept []dns.RR
	var removed []string
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.A)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if cls := netclass.Of(ip); cls != netclass.Public && !allowPrivate {
			removed = append(removed, ip.String()+" ("+string(cls)+")")
			if p.Enforcing() {
				continue
			}
		}
		kept = append(kept, &dns.A{Hdr: dns.RR_Header{Name: a.Hdr.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: a.A})
	}
	if len(removed) > 0 {
		reason := fmt.Sprintf("%s resolves to forbidden addresses %s; set allow_private: true on its entry to allow them", host, strings.Join(removed, ", "))
		if len(kept) == 0 || !p.Enforcing() {
			if q.policyDeny(dns.RcodeNameError, errForbiddenAddr, ruleOf(d), reason) {
				return
			}
		} else {
			q.allowNote(ruleOf(d), "allowed; removed "+reason)
		}
	}
	for i, cn := range cnames {
		rr := &dns.CNAME{Hdr: dns.RR_Header{Name: cn.Hdr.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: cn.Target}
		if i == 0 {
			rr.Hdr.Name = q.req.Question[0].Name // the client's spelling (0x20)
		}
		q.resp.Answer = append(q.resp.Answer, rr)
	}
	if len(cnames) == 0 && len(kept) > 0 {
		for _, rr := range kept {
			rr.Header().Name = q.req.Question[0].Name
		}
	}
	q.resp.Answer = append(q.resp.Answer, kept...)
}

// walkChain follows the CNAME chain from host through answer (bounded, so
// a loop cannot spin) and returns its CNAME records, the A records of its
// last name (when qtype is A) and that last name. For qtype CNAME only the
// first link is followed: that is the answer to the question.
func walkChain(answer []dns.RR, host string, qtype uint16) (cnames []*dns.CNAME, addrs []*dns.A, final string) {
	cur := host
	for hops := 0; hops < 16; hops++ {
		var next *dns.CNAME
		for _, rr := range answer {
			if !sameName(rr.Header().Name, cur) {
				continue
			}
			switch v := rr.(type) {
			case *dns.CNAME:
				if next == nil {
					next = v
				}
			case *dns.A:
				if qtype == dns.TypeA {
					addrs = append(addrs, v)
				}
			}
		}
		if len(addrs) > 0 || next == nil {
			return cnames, addrs, cur
		}
		cnames = append(cnames, next)
		cur = strings.ToLower(strings.TrimSuffix(next.Target, "."))
		for _, seen := range cnames[:len(cnames)-1] {
			if sameName(seen.Hdr.Name, cur) {
				return cnames, nil, cur // a loop: no address at its end
			}
		}
		if sameName(host, cur) {
			return cnames, nil, cur
		}
		if qtype == dns.TypeCNAME {
			return cnames, nil, cur
		}
	}
	return cnames, nil, cur
}

// sameName compares an owner name (with its trailing dot) with a
// normalized host, ignoring case.
func sameName(owner, host string) bool {
	owner = strings.TrimSuffix(owner, ".")
	return strings.EqualFold(owner, host)
}

// lookup returns the upstream answer for host, from the cache or from one
// exchange shared by every concurrent asker.
func (f *Filter) lookup(st *state, host string, qtype uint16) (c *cached, hit bool, err error) {
	k := cacheKey{host, qtype}
	if c := f.cache.get(k, f.now()); c != nil {
		f.met.cacheHit.Inc()
		return c, true, nil
	}
	f.met.cache.WithLabelValues("miss").Inc()
	v, err, _ := f.flight.Do(host+"/"+strconv.Itoa(int(qtype)), func() (any, error) {
		ctx, cancel := context.WithTimeout(f.ctx, f.cfg.QueryTimeout)
		defer cancel()
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(host), qtype)
		start := time.Now()
		resp, err := st.res.Exchange(ctx, m)
		f.met.upstreamTime.Observe(time.Since(start).Seconds())
		if err != nil {
			f.met.upstreamErrors.Inc()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
			}
			return nil, err
		}
		now := f.now()
		c := toCached(resp, st.p.DNS.CacheTTL.D(), now)
		if c.expires.After(now) {
			f.cache.put(k, c, now)
		}
		return c, nil
	})
	if err != nil {
		return nil, false, err
	}
	return v.(*cached), false, nil
}

// toCached keeps the records the filter may serve (A and CNAME of class
// IN) and computes the entry's lifetime: the smallest TTL, capped by
// cacheTTL; for negative answers the SOA's negative TTL (RFC 2308), capped
// likewise. Server failures are not cached.
func toCached(resp *dns.Msg, cacheTTL time.Duration, now time.Time) *cached {
	c := &cached{rcode: resp.Rcode, stored: now}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		c.expires = now
		return c
	}
	ttl := uint32(cacheTTL / time.Second)
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Class != dns.ClassINET {
			continue
		}
		switch rr.(type) {
		case *dns.A, *dns.CNAME:
			c.answer = append(c.answer, rr)
			ttl = min(ttl, h.Ttl)
		}
	}
	if len(c.answer) == 0 {
		neg := uint32(0)
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				neg = min(soa.Hdr.Ttl, soa.Minttl)
			}
		}
		ttl = min(ttl, neg)
	}
	c.expires = now.Add(time.Duration(ttl) * time.Second)
	return c
}

// budgetExhausted emits the one event that says a client ran out of its
// distinct-names budget for a registered domain.
func (q *query) budgetExhausted(reg string, limit int) {
	f := q.f
	f.met.budgetExceeded.Inc()
	reason := fmt.Sprintf("client %s asked for %d distinct names under %s within an hour; new names there are refused until older ones age out (possible DNS tunnelling)", q.ev.Client, limit, reg)
	f.log.Warn("dns: distinct-names budget exhausted", "client", q.ev.Client, "agent", f.cfg.Agent, "domain", reg, "budget", limit)
	f.sink.Emit(&audit.Event{
		TS: f.now(), Type: audit.TypeDNS, Agent: f.cfg.Agent, Client: q.ev.Client,
		Decision: audit.Deny, Error: errTunneling, Rule: "dns.tunneling.distinct_names_per_hour",
		Reason: reason, Action: "budget_exhausted",
		Detail: map[string]string{"registered_domain": reg, "budget": strconv.Itoa(limit)},
	})
}

// finish adds EDNS0 (and the EDE) when the client used it, packs the reply
// within the client's size limit (setting TC when it does not fit), and
// emits the audit event and metrics.
func (q *query) finish(proto string, opt *dns.OPT) []byte {
	f, resp := q.f, q.resp
	size := dns.MaxMsgSize
	if proto == "udp" {
		size = dns.MinMsgSize
	}
	if opt != nil {
		if proto == "udp" {
			size = max(dns.MinMsgSize, min(int(opt.UDPSize()), serverUDPSize))
		}
		ro := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		ro.SetUDPSize(serverUDPSize)
		if q.edeText != "" || q.edeCode != 0 {
			ro.Option = append(ro.Option, &dns.EDNS0_EDE{InfoCode: q.edeCode, ExtraText: truncText(q.edeText)})
		}
		resp.Extra = append(resp.Extra, ro)
		if resp.Rcode > 0xF {
			ro.SetExtendedRcode(uint16(resp.Rcode))
		}
	} else if resp.Rcode > 0xF {
		resp.Rcode = dns.RcodeFormatError
	}
	// Compression costs a map per message; only pay it when the reply
	// would not fit otherwise.
	out, err := resp.Pack()
	if err == nil && len(out) > size {
		resp.Compress = true
		out, err = resp.Pack()
		if err == nil && len(out) > size {
			resp.Truncate(size)
			out, err = resp.Pack()
		}
	}
	if err != nil {
		// Cannot happen with the records built here; reply SERVFAIL rather than nothing.
		f.log.Error("dns: pack reply", "err", err)
		fail := &dns.Msg{MsgHdr: dns.MsgHdr{Id: resp.Id, Response: true, Opcode: resp.Opcode, Rcode: dns.RcodeServerFailure}}
		out, _ = fail.Pack()
		resp = fail
	}
	ev := &q.ev
	ev.TS = f.now()
	ev.RCode = dns.RcodeToString[resp.Rcode]
	for _, rr := range resp.Answer {
		ev.Answer = append(ev.Answer, rrString(rr))
	}
	f.sink.Emit(ev)
	code := ev.Error
	if code == "" {
		code = "none"
	}
	qt := "none"
	if q.req != nil && len(q.req.Question) == 1 {
		qt = qtypeLabel(q.req.Question[0].Qtype)
	}
	f.met.countQuery(ev.Decision, code, qt)
	return out
}

// truncText keeps EDE text short enough to never push a reply over 512 bytes.
func truncText(s string) string {
	if len(s) > 300 {
		return s[:297] + "..."
	}
	return s
}

func rrString(rr dns.RR) string {
	switch v := rr.(type) {
	case *dns.A:
		return "A " + v.A.String()
	case *dns.CNAME:
		return "CNAME " + strings.TrimSuffix(v.Target, ".")
	}
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

func ruleOf(d *policy.Domain) string {
	if d == nil {
		return ""
	}
	return d.Domain
}

// clientKey identifies the client for rate limits and budgets.
func (q *query) clientKey() string {
	if q.ev.Client == "" {
		return "unknown"
	}
	return q.ev.Client
}

// displayName is the query name for events: without the trailing dot,
// and bounded (escaped binary labels can be four times their wire length).
func displayName(name string) string {
	name = strings.TrimSuffix(name, ".")
	if len(name) > 300 {
		return name[:297] + "..."
	}
	return name
}

func qtypeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// qtypeLabel bounds the metrics' qtype label to a few values.
func qtypeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeCNAME, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeTXT, dns.TypeANY, dns.TypeNULL, dns.TypeMX, dns.TypeNS, dns.TypePTR, dns.TypeSRV, dns.TypeSOA:
		return dns.TypeToString[t]
	}
	return "other"
}

func opcodeString(op int) string {
	if s, ok := dns.OpcodeToString[op]; ok {
		return s
	}
	return strconv.Itoa(op)
}
