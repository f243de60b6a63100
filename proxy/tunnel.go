package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"golang.org/x/sys/unix"
)

// helloTimeout bounds how long a client may take to send its ClientHello.
const helloTimeout = 10 * time.Second

// tunnel is an open CONNECT or transparent-TLS tunnel whose traffic the
// inner HTTP server handles (interception).
type tunnel struct {
	auth   authority
	scheme string // "https" (TLS inside) or "http"
	done   chan struct{}
	once   sync.Once
}

// tunnelConn carries its tunnel to the inner server's handlers and tells
// the tunnel when the inner server (or a hijacker) is done with it.
type tunnelConn struct {
	net.Conn
	t *tunnel
}

func (c *tunnelConn) Close() error {
	err := c.Conn.Close()
	c.t.once.Do(func() { close(c.t.done) })
	return err
}

// authorizeTunnel applies the policy to a tunnel to a. It reports whether the
// tunnel is intercepted. The budget and rate limit of intercepted tunnels are
// applied per inner request instead.
func (p *Proxy) authorizeTunnel(st *state, a authority) (*dest, bool, *denial) {
	d, dn := matchDest(st.pol, a)
	if dn != nil {
		return d, false, dn
	}
	// In report mode a suspicious name is reported and the tunnel goes on
	// as an allowed one would (intercepted if the entry says so).
	nameDn := p.checkName(st.pol, d)
	if nameDn != nil && nameDn.enforced(st.pol) {
		return d, false, nameDn
	}
	if d.alias {
		return d, false, deny(codeDestination, 403, "domains", "aliases are plain http://<alias>.devbox.local URLs, not tunnel destinations")
	}
	intercept := d.entry != nil && d.entry.TLSIntercept
	if !intercept && d.entry != nil {
		// Fail closed: rules that need to see the request cannot be checked
		// inside a tunnel the proxy does not terminate.
		if d.entry.ReadOnly {
			return d, false, deny(codeMethod, 403, "domains "+d.entry.Domain+" read_only", "%s is read-only, which the proxy can only enforce on intercepted HTTPS; the operator must set tls_intercept: true", d.entry.Domain)
		}
		if d.entry.HasPathRules() {
			return d, false, deny(codePath, 403, "domains "+d.entry.Domain+" paths", "%s has path rules, which the proxy can only enforce on intercepted HTTPS; the operator must set tls_intercept: true", d.entry.Domain)
		}
	}
	if !intercept {
		if ok, ra := p.limiter.Allow(d.key(), st.pol.RateLimitFor(d.entry)); !ok {
			dn := deny(codeRateLimited, 429, "rate_limit "+d.key(), "too many connections to %s; retry after %d seconds", a.host, secs(ra))
			dn.retryAfter = ra
			return d, false, dn
		}
		if limit := int64(st.pol.EgressLimitFor(d.entry)); limit > 0 && p.budget.Used(d.key()) >= limit {
			if ok, ra := p.budget.Take(d.key(), 1, limit); !ok {
				dn := deny(codeBudget, 429, "egress_limit "+d.key(), "the egress budget for %s (bytes sent per hour) is spent; retry after %d seconds", d.key(), secs(ra))
				dn.retryAfter = ra
				return d, false, dn
			}
		}
	}
	return d, intercept, nameDn
}

// handleConnect serves CONNECT on the explicit listener. Every refusal is an
// HTTP answer sent before any tunnel exists.
func (p *Proxy) handleConnect(w http.ResponseWriter, r *http.Request) {
	start := p.clock()
	st := p.state()
	ev := &audit.Event{Type: audit.TypeConnect, Agent: p.cfg.Agent, Method: http.MethodConnect, Client: r.RemoteAddr}
	a, err := parseAuthority(r.RequestURI, 0)
	if err != nil {
		ev.Host = r.RequestURI
		p.finishDenied(w, ev, start, "", deny(codeBadRequest, 400, "", "CONNECT needs host:port with a valid host name and port (%v)", unwrapMsg(err)), r.RequestURI)
		return
	}
	ev.Host, ev.Port = a.host, a.port
	d, intercept, dn := p.authorizeTunnel(st, a)
	ev.Rule, ev.Decision, ev.Intercepted = d.rule(), audit.Allow, intercept
	if dn != nil {
		if dn.enforced(st.pol) {
			p.finishDenied(w, ev, start, d.key(), dn, a.host)
			return
		}
		ev.Decision, ev.Error, ev.Reason, ev.Rule = audit.Report, dn.code, dn.reason, dn.rule
	}
	if !p.acquireTunnel(st) {
		p.finishDenied(w, ev, start, d.key(), deny(codeTooManyConns, 503, "proxy.max_tunnels", "too many open tunnels; close some and retry"), a.host)
		return
	}
	defer p.tunnels.Add(-1)

	var up net.Conn
	if !intercept {
		ctx, cancel := context.WithTimeout(r.Context(), st.pol.TimeoutFor(d.entry).D())
		c, ap, err := p.dial(ctx, st, dialPlan{host: a.host, port: a.port, isIP: a.ip.IsValid(), allowPrivate: d.rng != nil || (d.entry != nil && d.entry.AllowPrivate)})
		cancel()
		if err != nil {
			dn := classifyError(err)
			if dn.code != codeForbidden {
				p.log.Warn("connect upstream failed", "host", a.host, "err", err.Error())
			}
			if dn.code == codeForbidden || dn.code == codeBudget {
				ev.Decision = audit.Deny
			}
			p.finishDenied(w, ev, start, d.key(), dn, a.host)
			return
		}
		up = c
		ev.Upstream = ap.String()
		if !p.track(up) {
			up.Close()
			return
		}
		defer p.untrack(up)
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.log.Error("connect: hijack failed", "err", err)
		return
	}
	if !p.track(client) {
		client.Close()
		return
	}
	defer p.untrack(client)
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	ev.Status = http.StatusOK
	p.runTunnel(client, brw.Reader, st, d, intercept, up, ev, start)
}

// finishDenied answers a refused CONNECT and records it.
func (p *Proxy) finishDenied(w http.ResponseWriter, ev *audit.Event, start time.Time, key string, dn *denial, host string) {
	writeDenial(w, dn, host)
	if ev.Decision == "" || ev.Decision == audit.Allow && dn.code != codeUpstream && dn.code != codeTimeout {
		ev.Decision = audit.Deny
	}
	ev.Error, ev.Reason, ev.Status = dn.code, dn.reason, dn.status
	if dn.rule != "" {
		ev.Rule = dn.rule
	}
	ev.DurationMS = p.clock().Sub(start).Milliseconds()
	p.record(ev, key)
}

func (p *Proxy) acquireTunnel(st *state) bool {
	if n := p.tunnels.Add(1); n > int64(st.pol.Proxy.MaxTunnels) {
		p.tunnels.Add(-1)
		return false
	}
	return true
}

// serveTransparentTLS handles one redirected port-443 connection.
func (p *Proxy) serveTransparentTLS(c net.Conn) {
	start := p.clock()
	st := p.state()
	ev := &audit.Event{Type: audit.TypeConnect, Agent: p.cfg.Agent, Scheme: "https", Port: 443, Client: c.RemoteAddr().String()}
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	sni, raw, err := readClientHello(br)
	c.SetReadDeadline(time.Time{})
	refuse := func(key string, dn *denial) {
		ev.Decision, ev.Error, ev.Reason = audit.Deny, dn.code, dn.reason
		if dn.rule != "" {
			ev.Rule = dn.rule
		}
		ev.DurationMS = p.clock().Sub(start).Milliseconds()
		p.record(ev, key)
	}
	if err != nil || sni == "" {
		refuse("", deny(codeDestination, 403, "domains", "the TLS ClientHello names no server (SNI); transparent TLS is routed by SNI"))
		return
	}
	a, err := parseAuthority(sni, 443)
	if err != nil || a.ip.IsValid() {
		ev.Host = sni
		refuse("", deny(codeDestination, 403, "domains", "the TLS server name %q is not a valid host name", sni))
		return
	}
	ev.Host = a.host
	d, intercept, dn := p.authorizeTunnel(st, a)
	ev.Rule, ev.Decision, ev.Intercepted = d.rule(), audit.Allow, intercept
	if dn != nil {
		if dn.enforced(st.pol) {
			refuse(d.key(), dn)
			return
		}
		ev.Decision, ev.Error, ev.Reason, ev.Rule = audit.Report, dn.code, dn.reason, dn.rule
	}
	if !p.acquireTunnel(st) {
		refuse(d.key(), deny(codeTooManyConns, 503, "proxy.max_tunnels", "too many open tunnels"))
		return
	}
	defer p.tunnels.Add(-1)
	var up net.Conn
	if !intercept {
		ctx, cancel := context.WithTimeout(context.Background(), st.pol.TimeoutFor(d.entry).D())
		uc, ap, err := p.dial(ctx, st, dialPlan{host: a.host, port: 443, allowPrivate: d.entry != nil && d.entry.AllowPrivate})
		cancel()
		if err != nil {
			dn := classifyError(err)
			ev.Error, ev.Reason = dn.code, dn.reason
			if dn.code == codeForbidden {
				ev.Decision, ev.Rule = audit.Deny, dn.rule
			}
			ev.DurationMS = p.clock().Sub(start).Milliseconds()
			p.record(ev, d.key())
			return
		}
		up = uc
		ev.Upstream = ap.String()
		if !p.track(up) {
			up.Close()
			return
		}
		defer p.untrack(up)
	}
	p.runTunnelAfterHello(c, buffered(raw, br), st, d, intercept, up, ev, start)
}

// runTunnel reads the client's first bytes, checks the TLS server name
// against the tunnel's host, and runs the tunnel.
func (p *Proxy) runTunnel(client net.Conn, br *bufio.Reader, st *state, d *dest, intercept bool, up net.Conn, ev *audit.Event, start time.Time) {
	client.SetReadDeadline(time.Now().Add(helloTimeout))
	first, err := br.Peek(1)
	if err != nil {
		ev.Error, ev.Reason = "client_closed", "the client sent nothing"
		ev.DurationMS = p.clock().Sub(start).Milliseconds()
		p.record(ev, d.key())
		return
	}
	if first[0] != 0x16 { // not a TLS handshake record
		client.SetReadDeadline(time.Time{})
		if d.auth.port == 443 {
			p.tunnelRefused(ev, start, d, deny(codeDestination, 403, "domains", "a tunnel to port 443 must carry TLS"))
			return
		}
		if intercept {
			p.interceptConn(client, br, "http", d, ev, start)
			return
		}
		p.pipe(client, buffered(nil, br), up, st, d, ev, start)
		return
	}
	sni, raw, err := readClientHello(br)
	client.SetReadDeadline(time.Time{})
	if err != nil {
		p.tunnelRefused(ev, start, d, deny(codeDestination, 403, "domains", "the tunnel did not start with a valid TLS ClientHello"))
		return
	}
	if sni != "" && !d.auth.ip.IsValid() {
		n, err := policy.NormalizeHost(sni)
		if err != nil || n != d.auth.host {
			// Domain fronting: the TLS server name must be the host the
			// tunnel was allowed for.
			p.tunnelRefused(ev, start, d, deny(codeDestination, 403, "domains", "the TLS server name %q differs from the CONNECT host %s", sni, d.auth.host))
			return
		}
	}
	p.runTunnelAfterHello(client, buffered(raw, br), st, d, intercept, up, ev, start)
}

// buffered returns prefix followed by whatever br has buffered (bytes the
// client sent that were read from the socket but not yet relayed).
func buffered(prefix []byte, br *bufio.Reader) []byte {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		prefix = append(prefix, b...)
	}
	return prefix
}

// runTunnelAfterHello relays prefix (the ClientHello and anything after it
// already read) and then the client connection itself.
func (p *Proxy) runTunnelAfterHello(client net.Conn, prefix []byte, st *state, d *dest, intercept bool, up net.Conn, ev *audit.Event, start time.Time) {
	if intercept {
		p.interceptConn(client, io.MultiReader(bytes.NewReader(prefix), client), "https", d, ev, start)
		return
	}
	p.pipe(client, prefix, up, st, d, ev, start)
}

func (p *Proxy) tunnelRefused(ev *audit.Event, start time.Time, d *dest, dn *denial) {
	ev.Decision, ev.Error, ev.Reason, ev.Rule = audit.Deny, dn.code, dn.reason, dn.rule
	ev.DurationMS = p.clock().Sub(start).Milliseconds()
	p.record(ev, d.key())
}

// interceptConn terminates TLS (scheme https) with a leaf for the tunnel's
// host, or takes plain HTTP (scheme http), and hands the connection to the
// inner HTTP server, which checks every request. It returns when the
// connection is closed.
func (p *Proxy) interceptConn(client net.Conn, r io.Reader, scheme string, d *dest, ev *audit.Event, start time.Time) {
	var c net.Conn = &prefixConn{Conn: client, r: r}
	if scheme == "https" {
		tc := tls.Server(c, p.ca.TLSConfigForHost(d.auth.host))
		ctx, cancel := context.WithTimeout(context.Background(), helloTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			ev.Error, ev.Reason = "tls_handshake_failed", "the client did not accept the interception certificate (does it trust the cagent CA?)"
			ev.DurationMS = p.clock().Sub(start).Milliseconds()
			p.record(ev, d.key())
			return
		}
		c = tc
	}
	t := &tunnel{auth: d.auth, scheme: scheme, done: make(chan struct{})}
	if !p.innerLn.push(&tunnelConn{Conn: c, t: t}) {
		return
	}
	<-t.done
	ev.DurationMS = p.clock().Sub(start).Milliseconds()
	p.record(ev, d.key())
}

// spliceChunk is how much one kernel-side copy moves before the proxy
// accounts for it.
const spliceChunk = 1 << 20

// pipe relays prefix and then both directions until both are done, charging
// client-to-server bytes to the entry's budget and stopping the tunnel when
// it is spent, and closing it after idle_timeout without traffic. Between
// two plain TCP connections the bytes move with splice(2), never entering
// user space.
func (p *Proxy) pipe(client net.Conn, prefix []byte, up net.Conn, st *state, d *dest, ev *audit.Event, start time.Time) {
	p.metrics.tunnels.Inc()
	defer p.metrics.tunnels.Dec()
	rs := &reqState{st: st, d: d, key: d.key(), limit: int64(st.pol.EgressLimitFor(d.entry)), enforcing: st.pol.Enforcing()}
	closeBoth := func() { client.Close(); up.Close() }
	act := newActivity(st.pol.Proxy.IdleTimeout.D(), closeBoth, client, up)
	defer act.stop()

	upErr := make(chan error, 1)
	go func() {
		err := p.copyUp(client, prefix, up, rs, act)
		if err != nil {
			closeBoth()
		}
		closeWrite(up)
		upErr <- err
	}()
	p.copyDown(up, client, rs, act)
	closeWrite(client)
	budgetErr := <-upErr
	closeBoth()

	ev.BytesUp, ev.BytesDown = rs.bytesUp.Load(), rs.bytesDown.Load()
	var dn *denial
	switch {
	case errors.As(budgetErr, &dn):
		ev.Decision, ev.Error, ev.Reason, ev.Rule = audit.Deny, dn.code, "the tunnel was closed: "+dn.reason, dn.rule
	case act.idled.Load():
		ev.Error, ev.Reason = "idle_timeout", fmt.Sprintf("closed after %s without traffic", act.idle)
	case rs.over && ev.Decision == audit.Allow:
		ev.Decision, ev.Error, ev.Reason = audit.Report, codeBudget, "the egress budget would have closed this tunnel"
	}
	ev.DurationMS = p.clock().Sub(start).Milliseconds()
	p.record(ev, d.key())
}

// copyUp relays client-to-server bytes. Bytes that would cross the budget
// are not sent: near the limit it reads in user space and asks the budget
// before writing; far from it, it splices chunks no larger than what is left.
func (p *Proxy) copyUp(client net.Conn, prefix []byte, up net.Conn, rs *reqState, act *activity) error {
	if len(prefix) > 0 {
		if err := p.charge(rs, int64(len(prefix))); err != nil {
			return err
		}
		if _, err := up.Write(prefix); err != nil {
			return nil
		}
	}
	ct, ut := tcpOf(client), tcpOf(up)
	// The buffer is taken only for user-space copies, so a spliced tunnel
	// holds none while it waits.
	var buf []byte
	defer func() {
		if buf != nil {
			p.bufs.Put(&buf)
		}
	}()
	for {
		chunk := int64(spliceChunk)
		if rs.enforcing && rs.limit > 0 {
			chunk = min(chunk, rs.limit-p.budget.Used(rs.key))
		}
		if ct != nil && ut != nil && chunk >= copyBufSize {
			lr := io.LimitedReader{R: ct, N: chunk}
			n, err := ut.ReadFrom(&lr)
			if n > 0 {
				act.touch()
				// Within the remaining budget by construction; counted
				// unconditionally so concurrent tunnels see it.
				p.budget.Take(rs.key, n, 0)
				rs.bytesUp.Add(n)
				if !rs.enforcing && rs.limit > 0 && p.budget.Used(rs.key) > rs.limit {
					rs.mu.Lock()
					rs.over = true
					rs.mu.Unlock()
				}
			}
			if err != nil || n < chunk {
				return nil // EOF or a closed connection
			}
			continue
		}
		if buf == nil {
			buf = *(p.bufs.Get().(*[]byte))
		}
		n, rerr := client.Read(buf)
		if n > 0 {
			act.touch()
			if err := p.charge(rs, int64(n)); err != nil {
				return err
			}
			if _, werr := up.Write(buf[:n]); werr != nil {
				return nil
			}
		}
		if rerr != nil {
			return nil
		}
	}
}

// copyDown relays server-to-client bytes (not charged to the budget).
func (p *Proxy) copyDown(up, client net.Conn, rs *reqState, act *activity) {
	if ct, ut := tcpOf(client), tcpOf(up); ct != nil && ut != nil {
		for {
			lr := io.LimitedReader{R: ut, N: spliceChunk}
			n, err := ct.ReadFrom(&lr)
			if n > 0 {
				act.touch()
				rs.bytesDown.Add(n)
			}
			if err != nil || n < spliceChunk {
				return
			}
		}
	}
	bufp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bufp)
	buf := *bufp
	for {
		n, rerr := up.Read(buf)
		if n > 0 {
			act.touch()
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
			rs.bytesDown.Add(int64(n))
		}
		if rerr != nil {
			return
		}
	}
}

func tcpOf(c net.Conn) *net.TCPConn {
	tc, _ := c.(*net.TCPConn)
	return tc
}

// activity closes a tunnel after idle without traffic. Traffic is seen both
// from the copy loops (touch) and from the kernel's per-socket byte counters,
// because a splice moving a trickle of bytes reports only when its chunk ends.
type activity struct {
	idle   time.Duration
	base   time.Time
	last   atomic.Int64 // time.Since(base) of the last traffic
	idled  atomic.Bool
	timer  *time.Timer
	conns  []*net.TCPConn
	kbytes uint64 // kernel byte counters at the last check (timer goroutine only)
}

func newActivity(idle time.Duration, onIdle func(), conns ...net.Conn) *activity {
	a := &activity{idle: idle, base: time.Now()}
	for _, c := range conns {
		if tc := tcpOf(c); tc != nil {
			a.conns = append(a.conns, tc)
		}
	}
	a.kbytes = a.kernelBytes()
	a.timer = time.AfterFunc(1<<62, func() {
		if kb := a.kernelBytes(); kb != a.kbytes {
			a.kbytes = kb
			a.touch()
		}
		since := time.Since(a.base) - time.Duration(a.last.Load())
		if since >= a.idle {
			a.idled.Store(true)
			onIdle()
			return
		}
		a.timer.Reset(a.idle - since)
	})
	a.timer.Reset(idle)
	return a
}

func (a *activity) touch() { a.last.Store(int64(time.Since(a.base))) }
func (a *activity) stop()  { a.timer.Stop() }

func (a *activity) kernelBytes() uint64 {
	var total uint64
	for _, c := range a.conns {
		rc, err := c.SyscallConn()
		if err != nil {
			continue
		}
		rc.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				total += info.Bytes_received + info.Bytes_acked
			}
		})
	}
	return total
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// errHelloRead stops the handshake once the ClientHello is parsed.
var errHelloRead = errors.New("client hello read")

// readClientHello parses the TLS ClientHello at the start of r with
// crypto/tls itself (no hand-written parser), and returns its server name and
// the raw bytes consumed, to be replayed to the upstream or to the TLS server.
func readClientHello(r io.Reader) (sni string, raw []byte, err error) {
	rec := &recordingConn{r: r}
	var got bool
	cfg := &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni, got = h.ServerName, true
		return nil, errHelloRead
	}}
	herr := tls.Server(rec, cfg).Handshake()
	if !got {
		return "", rec.buf.Bytes(), fmt.Errorf("not a TLS ClientHello: %w", herr)
	}
	return sni, rec.buf.Bytes(), nil
}

// recordingConn is a read-only net.Conn that records what it reads; writes
// (the alert crypto/tls sends after GetConfigForClient fails) are dropped.
type recordingConn struct {
	r   io.Reader
	buf bytes.Buffer
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.buf.Write(b[:n])
	return n, err
}
func (c *recordingConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *recordingConn) Close() error                     { return nil }
func (c *recordingConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *recordingConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }
