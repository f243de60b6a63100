package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/credential"
)

// reqState travels with one proxied request through the reverse proxy.
type reqState struct {
	st         *state
	d          *dest
	scheme     string // upstream scheme
	credHeader string // header to clear (and set, when cred != "")
	cred       string
	secrets    []string // cred and the credential inside it, redacted from log lines
	key        string
	limit      int64
	enforcing  bool

	bytesUp   atomic.Int64
	bytesDown atomic.Int64

	mu       sync.Mutex // guards the fields below (transport goroutines write them)
	status   int
	denial   *denial
	upstream netip.AddrPort
	// upstreamS is upstream.String() when the forwarder set upstream (its
	// connection made the string once).
	upstreamS string
	over      bool // report mode: the budget would have stopped this request

	// The request's destination and event, allocated with it (handleHTTP)
	// rather than on their own. Sinks copy events, never keep the pointer.
	dest dest
	ev   audit.Event
}

func reqStateFrom(ctx context.Context) *reqState {
	rs, _ := ctx.Value(keyReq).(*reqState)
	return rs
}

func defaultPort(scheme string) int {
	if scheme == "https" {
		return 443
	}
	return 80
}

// serveExplicit handles the explicit proxy listener.
func (p *Proxy) serveExplicit(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.handleConnect(w, r)
		return
	}
	if r.URL.Host == "" || (r.URL.Scheme != "http" && r.URL.Scheme != "https") {
		p.refuseEarly(w, r, "http", r.Host, deny(codeBadRequest, 400, "", "send absolute-form requests (http://host/path) or CONNECT host:port to this proxy"))
		return
	}
	a, err := parseAuthority(r.URL.Host, defaultPort(r.URL.Scheme))
	if err != nil {
		p.refuseEarly(w, r, r.URL.Scheme, r.URL.Host, deny(codeDestination, 403, "domains", "the destination is not a valid host name (%v)", unwrapMsg(err)))
		return
	}
	p.handleHTTP(w, r, p.state(), a, r.URL.Scheme, false)
}

// serveTransparentHTTP handles redirected port-80 traffic, routed by Host.
func (p *Proxy) serveTransparentHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.refuseEarly(w, r, "http", r.Host, deny(codeBadRequest, 400, "", "CONNECT goes to the explicit proxy port, not port 80"))
		return
	}
	a, err := parseAuthority(r.Host, 80)
	if err != nil {
		p.refuseEarly(w, r, "http", r.Host, deny(codeDestination, 403, "domains", "the Host header is not a valid host name (%v)", unwrapMsg(err)))
		return
	}
	p.handleHTTP(w, r, p.state(), a, "http", false)
}

// serveIntercepted handles requests inside an intercepted tunnel. The Host
// must name the host the tunnel was opened (and its TLS server name checked)
// for, so one allowed tunnel cannot carry requests for another host.
func (p *Proxy) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	tc, _ := r.Context().Value(keyConn).(*tunnelConn)
	if tc == nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	t := tc.t
	a, err := parseAuthority(r.Host, defaultPort(t.scheme))
	if err != nil || a.host != t.auth.host || a.port != t.auth.port {
		p.refuseEarly(w, r, t.scheme, r.Host, deny(codeDestination, 403, "domains", "the Host header %q does not match the tunnel's host %s", r.Host, t.auth.hostport()))
		return
	}
	if r.Method == http.MethodConnect {
		p.refuseEarly(w, r, t.scheme, r.Host, deny(codeBadRequest, 400, "", "CONNECT inside a tunnel is not supported"))
		return
	}
	p.handleHTTP(w, r, p.state(), t.auth, t.scheme, true)
}

// refuseEarly answers a request that could not even be matched.
func (p *Proxy) refuseEarly(w http.ResponseWriter, r *http.Request, scheme, host string, dn *denial) {
	start := p.clock()
	writeDenial(w, dn, host)
	ev := p.newEvent(audit.TypeHTTP, r)
	ev.Scheme, ev.Host = scheme, host
	ev.Decision, ev.Error, ev.Reason, ev.Rule, ev.Status = audit.Deny, dn.code, dn.reason, dn.rule, dn.status
	ev.DurationMS = p.clock().Sub(start).Milliseconds()
	p.record(ev, "")
}

func (p *Proxy) newEvent(typ string, r *http.Request) *audit.Event {
	ev := new(audit.Event)
	p.initEvent(ev, typ, r)
	return ev
}

func (p *Proxy) initEvent(ev *audit.Event, typ string, r *http.Request) {
	*ev = audit.Event{
		Type:   typ,
		Agent:  p.cfg.Agent,
		Method: r.Method,
		Path:   r.URL.EscapedPath(),
		Client: r.RemoteAddr,
	}
}

// handleHTTP decides and forwards one HTTP request.
func (p *Proxy) handleHTTP(w http.ResponseWriter, r *http.Request, st *state, a authority, clientScheme string, intercepted bool) {
	start := p.clock()
	rs := &reqState{st: st}
	ev := &rs.ev
	p.initEvent(ev, audit.TypeHTTP, r)
	ev.Scheme, ev.Host, ev.Port, ev.Intercepted = clientScheme, a.host, a.port, intercepted
	path := ev.Path

	d := &rs.dest
	dn := matchDestInto(d, st.pol, a)
	st.nameDest(d)
	upScheme := clientScheme
	if d.alias {
		if clientScheme != "http" || intercepted {
			dn = deny(codeDestination, 403, "domains", "aliases are plain http://<alias>.devbox.local URLs; the proxy makes the HTTPS connection")
		}
		upScheme = "https"
	}
	if dn == nil {
		dn = p.checkName(st.pol, d)
	}
	if dn == nil {
		dn = checkRequest(d, r.Method, path)
	}
	if dn == nil {
		dn = checkUpgrade(d, r.Header)
	}
	if dn == nil {
		dn = checkMethodOverride(d, r.Header)
	}
	if dn == nil {
		if ok, ra := p.limiter.Allow(d.key(), st.pol.RateLimitFor(d.entry)); !ok {
			dn = deny(codeRateLimited, 429, "rate_limit "+d.key(), "too many requests to %s; retry after %d seconds", a.host, secs(ra))
			dn.retryAfter = ra
		}
	}
	ev.Rule = d.rule()
	ev.Decision = audit.Allow
	if dn != nil {
		ev.Error, ev.Reason, ev.Rule = dn.code, dn.reason, dn.rule
		if dn.enforced(st.pol) {
			writeDenial(w, dn, a.host)
			ev.Decision, ev.Status = audit.Deny, dn.status
			ev.DurationMS = p.clock().Sub(start).Milliseconds()
			p.record(ev, d.key())
			return
		}
		ev.Decision = audit.Report
	}
	if d.alias {
		ev.Host, ev.Port = d.auth.host, d.auth.port
	}

	rs.d, rs.scheme, rs.key, rs.enforcing = d, upScheme, d.key(), st.pol.Enforcing()
	rs.limit = int64(st.pol.EgressLimitFor(d.entry))
	if d.entry != nil && d.entry.Credential != nil {
		c := d.entry.Credential
		rs.credHeader = c.Header
		if upScheme == "https" {
			v, err := p.creds.HeaderValue(r.Context(), c)
			if err != nil {
				// The error names the credential, never its value.
				p.log.Error("credential unavailable", "domain", d.entry.Domain, "credential", credential.Name(c), "err", err)
				dn := deny(codeUpstream, 502, "domains "+d.entry.Domain+" credential", "the proxy could not load the credential for %s; ask the operator", d.entry.Domain)
				writeDenial(w, dn, a.host)
				ev.Error, ev.Reason, ev.Status = dn.code, dn.reason, dn.status
				ev.DurationMS = p.clock().Sub(start).Milliseconds()
				p.record(ev, d.key())
				return
			}
			rs.cred = v
			rs.secrets = secretParts(c.Format, v)
			ev.Credential = credential.Name(c)
		} else {
			// Never send a credential in clear text; the agent's own value
			// for the header is still dropped.
			p.log.Debug("credential not injected over plain http", "domain", d.entry.Domain)
		}
	}

	abort := false
	if len(upgradeProtocols(r.Header)) == 0 {
		abort = p.forward(w, r, rs)
	} else {
		// Protocol upgrades (WebSocket) go through ReverseProxy, which
		// turns the connection into a tunnel after the 101. The trace
		// travels in the context the reverse proxy derives the outbound
		// request from, so RoundTrip needs no second request copy.
		ctx := httptrace.WithClientTrace(context.WithValue(r.Context(), keyReq, rs), &httptrace.ClientTrace{GotConn: rs.gotConn})
		p.rp.ServeHTTP(w, r.WithContext(ctx))
	}

	rs.mu.Lock()
	ev.Status = rs.status
	if rs.upstreamS != "" {
		ev.Upstream = rs.upstreamS
	} else if rs.upstream.IsValid() {
		ev.Upstream = rs.upstream.String()
	}
	if dn := rs.denial; dn != nil {
		ev.Error, ev.Reason = dn.code, dn.reason
		if dn.code == codeForbidden || dn.code == codeBudget {
			ev.Decision, ev.Rule = audit.Deny, dn.rule
		}
	}
	if rs.over && ev.Decision == audit.Allow {
		ev.Decision, ev.Error, ev.Reason = audit.Report, codeBudget, "the egress budget would have stopped this request"
	}
	rs.mu.Unlock()
	ev.BytesUp, ev.BytesDown = rs.bytesUp.Load(), rs.bytesDown.Load()
	end := p.clock()
	ev.DurationMS = end.Sub(start).Milliseconds()
	p.recordAt(ev, d.key(), end)
	if abort {
		// The response was cut off after its header went out: end the
		// client connection so the truncation cannot look like a complete
		// response (as ReverseProxy does).
		panic(http.ErrAbortHandler)
	}
}

// rewrite builds the outbound request: the checked destination, the
// original path and query, and the credential (replacing, never adding to,
// whatever the agent sent). ReverseProxy has already removed hop-by-hop
// headers (Proxy-Authorization included) and X-Forwarded-*, and adds none.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	rs := reqStateFrom(pr.In.Context())
	out := pr.Out
	host := rs.d.auth.host
	if rs.d.auth.ip.Is6() {
		host = "[" + host + "]"
	}
	if rs.d.auth.port != defaultPort(rs.scheme) {
		host += ":" + strconv.Itoa(rs.d.auth.port)
	}
	out.URL.Scheme = rs.scheme
	out.URL.Host = host
	out.URL.User = nil
	out.URL.Opaque = ""
	out.URL.Path = pr.In.URL.Path
	out.URL.RawPath = pr.In.URL.RawPath
	out.URL.RawQuery = pr.In.URL.RawQuery
	out.Host = host
	out.Header.Del("Proxy-Authorization")
	out.Header.Del("Proxy-Connection")
	if rs.credHeader != "" {
		for k := range out.Header {
			if sameHeaderName(k, rs.credHeader) {
				delete(out.Header, k)
			}
		}
		if rs.cred != "" {
			out.Header.Set(rs.credHeader, rs.cred)
		}
	}
}

// roundTripper sends a request through the transport of its entry, charging
// the bytes it sends to the entry's egress budget.
type roundTripper struct{ p *Proxy }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	p := rt.p
	rs := reqStateFrom(req.Context())
	if rs == nil {
		return nil, errors.New("proxy: request without state")
	}
	if err := p.charge(rs, headerBytes(req)); err != nil {
		return nil, err
	}
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &budgetBody{rc: req.Body, p: p, rs: rs}
	}
	return p.transport(rs.st, rs.d).RoundTrip(req)
}

// gotConn records the upstream address of the connection (new or reused)
// the request goes out on.
func (rs *reqState) gotConn(info httptrace.GotConnInfo) {
	var ap netip.AddrPort
	switch a := info.Conn.RemoteAddr().(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	if ap.IsValid() {
		rs.mu.Lock()
		rs.upstream, rs.upstreamS = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ""
		rs.mu.Unlock()
	}
}

// charge counts n bytes sent upstream against the entry's budget. In
// enforce mode bytes that would cross the budget are refused (and not sent);
// in report mode they are counted and the request marked.
func (p *Proxy) charge(rs *reqState, n int64) error {
	if !rs.enforcing {
		p.budget.Take(rs.key, n, 0)
		rs.bytesUp.Add(n)
		if rs.limit > 0 && p.budget.Used(rs.key) > rs.limit {
			rs.mu.Lock()
			rs.over = true
			rs.mu.Unlock()
		}
		return nil
	}
	ok, ra := p.budget.Take(rs.key, n, rs.limit)
	if !ok {
		dn := deny(codeBudget, 429, "egress_limit "+rs.key, "the egress budget for %s (bytes sent per hour) is spent; retry after %d seconds", rs.key, secs(ra))
		dn.retryAfter = ra
		return dn
	}
	rs.bytesUp.Add(n)
	return nil
}

// headerBytes is the size of the request line and header block as sent.
func headerBytes(req *http.Request) int64 {
	n := len(req.Method) + 1 + len(req.URL.EscapedPath()) + 11 // " HTTP/1.1\r\n"
	if req.URL.RawQuery != "" {
		n += 1 + len(req.URL.RawQuery)
	}
	n += 8 + len(req.Host) // "Host: ...\r\n"
	for k, vs := range req.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	if req.ContentLength > 0 {
		n += 18 + len(strconv.FormatInt(req.ContentLength, 10))
	}
	return int64(n + 2)
}

// budgetBody charges request body bytes as the transport reads them, and
// stops the request when the budget runs out.
type budgetBody struct {
	rc io.ReadCloser
	p  *Proxy
	rs *reqState
}

func (b *budgetBody) Read(buf []byte) (int, error) {
	n, err := b.rc.Read(buf)
	if n > 0 {
		if cerr := b.p.charge(b.rs, int64(n)); cerr != nil {
			b.rs.mu.Lock()
			b.rs.denial, _ = cerr.(*denial)
			b.rs.mu.Unlock()
			return 0, cerr
		}
	}
	return n, err
}

func (b *budgetBody) Close() error { return b.rc.Close() }

// modifyResponse counts response bytes, and for protocol upgrades charges
// what the client sends on the upgraded connection.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	rs := reqStateFrom(resp.Request.Context())
	if rs == nil {
		return nil
	}
	rs.mu.Lock()
	rs.status = resp.StatusCode
	rs.mu.Unlock()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			resp.Body = &upgradeBody{rwc: rwc, p: p, rs: rs}
		}
		return nil
	}
	resp.Body = &countBody{rc: resp.Body, rs: rs}
	return nil
}

type countBody struct {
	rc io.ReadCloser
	rs *reqState
}

func (b *countBody) Read(buf []byte) (int, error) {
	n, err := b.rc.Read(buf)
	b.rs.bytesDown.Add(int64(n))
	return n, err
}

func (b *countBody) Close() error { return b.rc.Close() }

type upgradeBody struct {
	rwc io.ReadWriteCloser
	p   *Proxy
	rs  *reqState
}

func (b *upgradeBody) Read(buf []byte) (int, error) {
	n, err := b.rwc.Read(buf)
	b.rs.bytesDown.Add(int64(n))
	return n, err
}

func (b *upgradeBody) Write(buf []byte) (int, error) {
	if err := b.p.charge(b.rs, int64(len(buf))); err != nil {
		b.rwc.Close()
		return 0, err
	}
	return b.rwc.Write(buf)
}

func (b *upgradeBody) Close() error { return b.rwc.Close() }

// proxyError turns a transport error into the decision table's answer.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	p.upstreamFailed(w, r, reqStateFrom(r.Context()), err)
}

// upstreamFailed answers a request that could not be completed upstream
// (before any of the response was sent).
func (p *Proxy) upstreamFailed(w http.ResponseWriter, r *http.Request, rs *reqState, err error) {
	dn := classifyError(err)
	if rs != nil {
		rs.mu.Lock()
		rs.status, rs.denial = dn.status, dn
		rs.mu.Unlock()
	}
	if r.Context().Err() != nil && dn.code == codeUpstream {
		return // the client went away; nobody to answer
	}
	if dn.code == codeUpstream || dn.code == codeTimeout {
		p.log.Warn("upstream request failed", "host", r.Host, "err", rs.redact(err.Error()))
	}
	host := ""
	if rs != nil {
		host = rs.d.auth.host
	}
	writeDenial(w, dn, host)
}

// secretParts returns what to redact from error text for an injected
// header value: the value, the credential the format wraps, and the value's
// longer words (a parse error may quote any part of it). Upstream errors
// quote what the upstream sent, and an upstream can send back the request
// it got.
func secretParts(format, v string) []string {
	parts := []string{v}
	if format == "" {
		format = "{value}"
	}
	if i := strings.Index(format, "{value}"); i >= 0 && strings.Count(format, "{value}") == 1 {
		suffix := format[i+len("{value}"):]
		if len(v) >= i+len(suffix) {
			parts = append(parts, v[i:len(v)-len(suffix)])
		}
	}
	for _, f := range strings.Fields(v) {
		if len(f) >= 8 {
			parts = append(parts, f)
		}
	}
	// Longest first, so a part is never left half replaced.
	slices.SortFunc(parts, func(a, b string) int { return len(b) - len(a) })
	return parts
}

// redact removes the request's credential from s (a log line's error text).
func (rs *reqState) redact(s string) string {
	if rs == nil {
		return s
	}
	for _, p := range rs.secrets {
		if p != "" {
			s = strings.ReplaceAll(s, p, "[credential]")
		}
	}
	return s
}

func classifyError(err error) *denial {
	var dn *denial
	var fe *forbiddenError
	var re *resolveError
	var ne net.Error
	switch {
	case errors.As(err, &dn):
		return dn
	case errors.As(err, &fe):
		return deny(codeForbidden, 403, "netclass "+string(fe.class), "%s resolves to a %s address, which agents may not reach (the entry would need allow_private: true)", fe.host, fe.class)
	case errors.As(err, &re):
		return deny(codeUpstream, 502, "", "%s does not resolve", re.host)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return deny(codeTimeout, 504, "timeout", "the upstream server did not answer in time")
	}
	return deny(codeUpstream, 502, "", "the proxy could not complete the request to the upstream server")
}

type denialBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
	Domain string `json:"domain"`
	Rule   string `json:"rule"`
}

// writeDenial writes the design.md section 5 answer.
func writeDenial(w http.ResponseWriter, dn *denial, domain string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Cagent-Deny-Reason", dn.code)
	h.Set("Cache-Control", "no-store")
	if dn.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(secs(dn.retryAfter)))
	}
	body, _ := json.Marshal(denialBody{Error: dn.code, Reason: dn.reason, Domain: domain, Rule: dn.rule})
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(dn.status)
	w.Write(append(body, '\n'))
}

func secs(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
