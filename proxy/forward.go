package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/sys/unix"
)

// The forwarder sends ordinary HTTP/1.1 requests upstream itself instead of
// through httputil.ReverseProxy and http.Transport. The handler goroutine
// writes the request and reads the response on a pooled connection: no
// read and write loop goroutines per connection and no hand-off between
// them per request, no header clones, no MIME parsing per response. Protocol
// upgrades still go through ReverseProxy (Proxy.rp).
//
// What goes upstream is what the ReverseProxy path sends: the request line
// for the checked destination, the agent's headers minus hop-by-hop headers
// (and those the Connection header lists), Proxy-Authorization,
// Proxy-Connection, Forwarded and X-Forwarded-*, with the credential header
// replaced (never appended to); no request trailers; Content-Length or
// chunked framing chosen by the proxy. Every byte of it is charged to the
// egress budget before it is sent.

const (
	// maxIdlePerUpstream and maxIdleTotal bound the idle connections one
	// policy state keeps (as MaxIdleConnsPerHost and MaxIdleConns did).
	maxIdlePerUpstream = 256
	maxIdleTotal       = 512
	// idleConnTimeout closes connections idle for longer.
	idleConnTimeout = 90 * time.Second
	// maxResponseHeaderBytes bounds a response's header block (and each 1xx).
	maxResponseHeaderBytes = 1 << 20
	// max1xx is how many informational responses one request may get.
	max1xx = 5
	// upBufSize is the per-connection read and write buffer. Bodies are
	// copied through the proxy's 32 KiB buffers, which bypass these.
	upBufSize = 8 << 10
)

// upstreamKey names a set of interchangeable upstream connections: a
// connection is reused only for the policy entry, scheme and destination it
// was dialed (and its address checked, and its certificate verified) for.
type upstreamKey struct {
	entry  string
	scheme string
	host   string
	port   int
}

// upConn is one persistent upstream connection. Only the goroutine that took
// it from the pool uses it.
type upConn struct {
	key    upstreamKey
	conn   net.Conn // what requests are written to (TLS or TCP)
	raw    net.Conn // the dialed connection under TLS, for the idle check and cancellation
	rc     syscall.RawConn
	br     *bufio.Reader
	bw     *bufio.Writer
	addr   netip.AddrPort
	addrS  string // addr.String(), made once for the events of every request on c
	reused bool
	idleAt time.Duration // since monoBase

	limit int64 // bytes the reader may still read (bounds header blocks)
	nread int64 // bytes read since the request was written
	// staleRD: the response header's read deadline is still set on conn
	// but no longer applies. Read clears it before it next reads from
	// conn; a body that came in with the header never needs that (nor the
	// timer update). Setting a new read deadline resets it (setReadDeadline, setDeadline).
	staleRD bool

	peekFn  func(fd uintptr) // the idle check, made once
	peeked  bool             // the idle check found data or EOF
	closeFn func()           // closes raw, made once for the per-request context.AfterFunc
}

func (c *upConn) Read(b []byte) (int, error) {
	if c.limit <= 0 {
		return 0, fmt.Errorf("upstream response header larger than %d bytes", maxResponseHeaderBytes)
	}
	if int64(len(b)) > c.limit {
		b = b[:c.limit]
	}
	if c.staleRD {
		c.staleRD = false
		c.conn.SetReadDeadline(time.Time{})
	}
	n, err := c.conn.Read(b)
	c.limit -= int64(n)
	c.nread += int64(n)
	return n, err
}

func (c *upConn) close() { c.conn.Close() }

// setReadDeadline and setDeadline set conn's deadlines; the read deadline
// they set applies (it is not stale).
func (c *upConn) setReadDeadline(t time.Time) {
	c.staleRD = false
	c.conn.SetReadDeadline(t)
}

func (c *upConn) setDeadline(t time.Time) {
	c.staleRD = false
	c.conn.SetDeadline(t)
}

// usable reports whether an idle connection can carry a request: nothing
// arrived on it while it was idle (neither an EOF, nor an unsolicited
// answer such as the 408 some servers send when they close an idle
// connection, nor bytes past the end of the last response: a body on a
// 204, 304 or HEAD answer, more than Content-Length said). It costs one
// non-blocking MSG_PEEK (net/http's transport learns the same from its read
// goroutine), made before every reuse: bytes left on the connection would
// otherwise be read as the next request's response, and every later
// response on the connection would answer the request before it.
func (c *upConn) usable() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.rc == nil {
		return true // not a socket (a tunnel through an upstream proxy with replayed bytes)
	}
	c.peeked = false
	// Control, not Read: the peek never waits, and a stale read deadline
	// (staleRD) that expired while the connection was idle must not fail it.
	if err := c.rc.Control(c.peekFn); err != nil {
		return false
	}
	return !c.peeked
}

func newUpConn(key upstreamKey, conn, raw net.Conn, addr netip.AddrPort) *upConn {
	c := &upConn{key: key, conn: conn, raw: raw, addr: addr}
	if addr.IsValid() {
		c.addrS = addr.String()
	}
	c.closeFn = func() { raw.Close() }
	c.br = bufio.NewReaderSize(c, upBufSize)
	c.bw = bufio.NewWriterSize(conn, upBufSize)
	if sc, ok := raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.rc = rc
			b := new([1]byte)
			c.peekFn = func(fd uintptr) {
				// recvfrom without an address: unix.Recvfrom allocates one
				// per call. The socket is non-blocking and MSG_DONTWAIT
				// never waits, so the raw form (no scheduler hand-off) fits.
				_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
				// Data, EOF (both succeed) or any error but "nothing there
				// yet" makes the connection unusable.
				c.peeked = errno != unix.EAGAIN
			}
		}
	}
	return c
}

// monoBase is the origin of monoNow.
var monoBase = time.Now()

// monoNow reads only the monotonic clock (time.Since of a time with a
// monotonic reading does), not also the wall clock as time.Now does: idle
// times are compared with each other, never shown.
func monoNow() time.Duration { return time.Since(monoBase) }

// upstreamPool holds the idle connections of one policy state.
type upstreamPool struct {
	mu     sync.Mutex
	idle   map[upstreamKey][]*upConn // most recently used last
	n      int
	closed bool
	sweep  *time.Timer
	// spare is the emptied list of the last key whose map entry went, kept
	// for the next key that needs one: a connection going back and forth
	// between idle and busy would otherwise make a new list each time.
	spare []*upConn
}

// get returns the most recently used idle connection for key, or nil.
func (p *upstreamPool) get(key upstreamKey) *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		l := p.idle[key]
		if len(l) == 0 {
			return nil
		}
		c := l[len(l)-1]
		l[len(l)-1] = nil
		if len(l) == 1 {
			delete(p.idle, key) // no map entry per name once its connections are gone
			p.spare = l[:0]
		} else {
			p.idle[key] = l[:len(l)-1]
		}
		p.n--
		if monoNow()-c.idleAt < idleConnTimeout {
			return c
		}
		c.close()
	}
}

// put returns a connection whose last exchange completed cleanly.
func (p *upstreamPool) put(c *upConn) {
	p.mu.Lock()
	if p.closed || p.n >= maxIdleTotal || len(p.idle[c.key]) >= maxIdlePerUpstream {
		p.mu.Unlock()
		c.close()
		return
	}
	if p.idle == nil {
		p.idle = map[upstreamKey][]*upConn{}
	}
	c.reused = true
	c.idleAt = monoNow()
	l := p.idle[c.key]
	if l == nil && p.spare != nil {
		l, p.spare = p.spare, nil
	}
	p.idle[c.key] = append(l, c)
	p.n++
	if p.sweep == nil {
		p.sweep = time.AfterFunc(idleConnTimeout/2, p.sweepIdle)
	}
	p.mu.Unlock()
}

// sweepIdle closes connections idle longer than idleConnTimeout (each list
// is oldest first), and runs again while any remain.
func (p *upstreamPool) sweepIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	now := monoNow()
	for k, l := range p.idle {
		i := 0
		for i < len(l) && now-l[i].idleAt >= idleConnTimeout {
			l[i].close()
			i++
		}
		p.n -= i
		if i == len(l) {
			delete(p.idle, k)
		} else if i > 0 {
			p.idle[k] = append(l[:0:0], l[i:]...)
		}
	}
	if p.n > 0 {
		p.sweep.Reset(idleConnTimeout / 2)
	} else {
		p.sweep = nil
	}
}

// closeAll closes the idle connections; connections in use are closed when
// their request ends.
func (p *upstreamPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, l := range p.idle {
		for _, c := range l {
			c.close()
		}
	}
	p.idle, p.n, p.spare = nil, 0, nil
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
}

// upstreamSendError marks a failure to write the request upstream (not a
// client or budget failure).
type upstreamSendError struct{ err error }

func (e *upstreamSendError) Error() string { return "write request upstream: " + e.err.Error() }
func (e *upstreamSendError) Unwrap() error { return e.err }

// clientBodyError is a failure to read the agent's request body.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "read request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// forward sends r upstream on a pooled connection and streams the response
// to w. It reports abort when the response was cut off after its header was
// sent: the caller records the event and then aborts the client connection,
// so the client cannot mistake a truncated body for a complete one.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rs *reqState) (abort bool) {
	key := upstreamKey{entry: rs.key, scheme: rs.scheme, host: rs.d.auth.host, port: rs.d.auth.port}
	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	// A request that failed on a reused connection before any answer came
	// back is sent again on a new connection only when that is harmless:
	// idempotent and without a body (so nothing of the agent's was consumed).
	replayable := !hasBody && (r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions || r.Method == http.MethodTrace)
	ctx := r.Context()
	timeout := rs.st.pol.TimeoutFor(rs.d.entry).D()
	if rs.credHeader != "" && (!httpguts.ValidHeaderFieldName(rs.credHeader) || !httpguts.ValidHeaderFieldValue(rs.cred)) {
		// Never write a header that could split the request (net/http's
		// transport refuses these too).
		p.upstreamFailed(w, r, rs, errors.New("the credential header is not a valid header field"))
		return false
	}
	for attempt := 0; ; attempt++ {
		c, err := p.upstreamConn(ctx, rs, key, timeout, attempt > 0)
		if err != nil {
			p.upstreamFailed(w, r, rs, err)
			return false
		}
		rs.mu.Lock()
		rs.upstream, rs.upstreamS = c.addr, c.addrS
		rs.mu.Unlock()
		// The client going away (or the server closing) ends the exchange:
		// closing the socket unblocks whatever this goroutine waits on.
		stop := context.AfterFunc(ctx, c.closeFn)
		resp, err := p.exchange(w, c, r, rs, hasBody, timeout)
		if err != nil {
			stop()
			c.close()
			var dn *denial
			if attempt == 0 && c.reused && replayable && c.nread == 0 && ctx.Err() == nil && !isTimeout(err) && !errors.As(err, &dn) {
				p.log.Debug("reused upstream connection failed; retrying on a new one", "host", key.host, "err", rs.redact(err.Error()))
				continue
			}
			p.upstreamFailed(w, r, rs, err)
			return false
		}
		if resp.StatusCode == http.StatusRequestTimeout && attempt == 0 && c.reused && replayable {
			// What some servers send on a connection they close for being
			// idle, read here as the answer when it arrived just after the
			// idle check.
			stop()
			c.close()
			continue
		}
		reuse, abort := p.relay(w, r, rs, c, resp)
		if !stop() || !reuse {
			c.close()
		} else {
			rs.st.pool.put(c)
		}
		return abort
	}
}

// isSendError reports whether err is an upstreamSendError (a function of its
// own so that the errors.As target escapes only on this error path).
func isSendError(err error) bool {
	var se *upstreamSendError
	return errors.As(err, &se)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// upstreamConn returns a usable idle connection for key, or dials one:
// exactly the address checked for the entry, then TLS verified against the
// state's roots for the destination's name.
func (p *Proxy) upstreamConn(ctx context.Context, rs *reqState, key upstreamKey, timeout time.Duration, fresh bool) (*upConn, error) {
	st := rs.st
	if !fresh {
		for {
			c := st.pool.get(key)
			if c == nil {
				break
			}
			if c.usable() {
				c.nread = 0
				return c, nil
			}
			c.close()
		}
	}
	d := rs.d
	plan := dialPlan{host: d.auth.host, port: d.auth.port, isIP: d.auth.ip.IsValid(), allowPrivate: d.rng != nil || (d.entry != nil && d.entry.AllowPrivate)}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	raw, ap, err := p.dial(dctx, st, plan)
	cancel()
	if err != nil {
		return nil, err
	}
	conn := raw
	if key.scheme == "https" {
		tc := tls.Client(raw, &tls.Config{RootCAs: st.rootCAs, MinVersion: tls.VersionTLS12, ServerName: d.auth.host})
		hctx, cancel := context.WithTimeout(ctx, timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("upstream TLS: %w", err)
		}
		conn = tc
	}
	return newUpConn(key, conn, raw, ap), nil
}

// exchange writes r on c and reads the response header, forwarding
// informational (1xx) responses to the client.
func (p *Proxy) exchange(w http.ResponseWriter, c *upConn, r *http.Request, rs *reqState, hasBody bool, timeout time.Duration) (*http.Response, error) {
	deadline, werr := p.writeRequest(c, r, rs, hasBody, timeout)
	if werr != nil && !isSendError(werr) {
		return nil, werr // budget or client body: nothing to wait for
	}
	if hasBody || werr != nil {
		// As ResponseHeaderTimeout: the clock starts when the request is
		// sent. (A request without a body is sent as its head is written,
		// and writeRequest set one deadline for both.)
		deadline = time.Now().Add(timeout)
		c.setReadDeadline(deadline)
	}
	n1xx := 0
	for {
		c.limit = maxResponseHeaderBytes
		resp, err := http.ReadResponse(c.br, r)
		if err != nil {
			if werr != nil {
				return nil, werr
			}
			if !time.Now().Before(deadline) {
				// A deadline that cuts a line short surfaces as a parse
				// error of the partial line (bufio.Reader.ReadLine drops
				// the error): it is still the upstream's timeout.
				return nil, fmt.Errorf("read upstream response: %w (%v)", os.ErrDeadlineExceeded, err)
			}
			return nil, fmt.Errorf("read upstream response: %w", err)
		}
		code := resp.StatusCode
		if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
			if n1xx++; n1xx > max1xx {
				return nil, errors.New("too many 1xx responses from upstream")
			}
			h := w.Header()
			copyEndToEnd(h, resp.Header)
			w.WriteHeader(code)
			clear(h)
			continue
		}
		c.limit = math.MaxInt64
		c.staleRD = true // the body may take its time
		if code == http.StatusSwitchingProtocols {
			return nil, errors.New("upstream switched protocols for a request that asked for no upgrade")
		}
		if werr != nil {
			// The upstream answered before taking the whole body (a 413, a
			// 401): pass the answer on, and do not reuse the connection.
			resp.Close = true
		}
		return resp, nil
	}
}

// writeRequest writes the request head and body to c, charging every byte
// to the budget before it is written. An upstream that takes none of what
// is written for timeout ends the request: without a write deadline a
// server that stops reading a body (and neither answers nor closes) would
// hold the handler, and its sockets, for as long as it liked, even after
// the agent left (the server notices a client going away only once the
// request body has been read).
//
// Without a body, the deadline it returns is also set as the read deadline
// for the response header: the request is sent as soon as its head is
// written, so one deadline (one timer update) covers both.
func (p *Proxy) writeRequest(c *upConn, r *http.Request, rs *reqState, hasBody bool, timeout time.Duration) (time.Time, error) {
	chunked := hasBody && r.ContentLength < 0
	head := appendRequestHead(c.bw.AvailableBuffer(), r, rs, hasBody, chunked)
	if err := p.charge(rs, int64(len(head))); err != nil {
		return time.Time{}, err
	}
	deadline := time.Now().Add(timeout)
	if hasBody {
		c.conn.SetWriteDeadline(deadline)
	} else {
		c.setDeadline(deadline)
	}
	if _, err := c.bw.Write(head); err != nil {
		return deadline, &upstreamSendError{err}
	}
	if hasBody {
		if err := p.writeBody(c, r, rs, chunked, timeout); err != nil {
			return deadline, err
		}
	}
	if err := c.bw.Flush(); err != nil {
		return deadline, &upstreamSendError{err}
	}
	return deadline, nil
}

// writeBody copies the request body, re-framed as it is sent (the server
// removed the client's framing).
func (p *Proxy) writeBody(c *upConn, r *http.Request, rs *reqState, chunked bool, timeout time.Duration) error {
	bufp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bufp)
	buf := *bufp
	var size [20]byte
	for {
		n, rerr := r.Body.Read(buf)
		if n > 0 {
			var prefix []byte
			if chunked {
				prefix = append(strconv.AppendInt(size[:0], int64(n), 16), '\r', '\n')
			}
			cost := int64(n)
			if chunked {
				cost += int64(len(prefix)) + 2
			}
			if err := p.charge(rs, cost); err != nil {
				return err
			}
			// The clock runs while the upstream takes this chunk, not
			// while the agent is slow to send the next.
			c.conn.SetWriteDeadline(time.Now().Add(timeout))
			if chunked {
				c.bw.Write(prefix)
			}
			if _, err := c.bw.Write(buf[:n]); err != nil {
				return &upstreamSendError{err}
			}
			if chunked {
				if _, err := c.bw.WriteString("\r\n"); err != nil {
					return &upstreamSendError{err}
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &clientBodyError{rerr}
		}
	}
	if chunked {
		// Request trailers are not sent: they would escape the header
		// checks (and the credential header's replacement).
		if err := p.charge(rs, 5); err != nil {
			return err
		}
		if _, err := c.bw.WriteString("0\r\n\r\n"); err != nil {
			return &upstreamSendError{err}
		}
	}
	return nil
}

// appendRequestHead appends the request line and header block that go
// upstream.
func appendRequestHead(b []byte, r *http.Request, rs *reqState, hasBody, chunked bool) []byte {
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = appendRequestURI(b, r.URL)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	if rs.d.auth.ip.Is6() {
		b = append(b, '[')
		b = append(b, rs.d.auth.host...)
		b = append(b, ']')
	} else {
		b = append(b, rs.d.auth.host...)
	}
	if rs.d.auth.port != defaultPort(rs.scheme) {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(rs.d.auth.port), 10)
	}
	b = append(b, "\r\n"...)
	// Headers the Connection header names are hop-by-hop too.
	var listed []string
	for _, v := range r.Header["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				listed = append(listed, f)
			}
		}
	}
	cred := rs.credHeader
	for k, vv := range r.Header {
		if skipRequestHeader(k) || cred != "" && sameHeaderName(k, cred) || containsFold(listed, k) {
			continue
		}
		if k == "User-Agent" {
			// As net/http: the first value, none when empty.
			if len(vv) > 0 && vv[0] != "" {
				b = appendHeader(b, k, vv[0])
			}
			continue
		}
		for _, v := range vv {
			b = appendHeader(b, k, v)
		}
	}
	if rs.cred != "" {
		b = appendHeader(b, cred, rs.cred)
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		b = append(b, "Te: trailers\r\n"...)
	}
	switch {
	case chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case hasBody:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, r.ContentLength, 10)
		b = append(b, "\r\n"...)
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		b = append(b, "Content-Length: 0\r\n"...) // many servers expect one
	}
	return append(b, "\r\n"...)
}

func appendHeader(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

// sameHeaderName reports whether two header names are the same to some
// server: ignoring case, and with '_' read as '-'. CGI, WSGI, Rack and PHP
// servers turn both X-Api-Key and X_Api_Key into HTTP_X_API_KEY, so an
// agent's X_Api_Key sent beside the injected X-Api-Key could stand in for
// the credential (and make the upstream act for the agent's own account).
func sameHeaderName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '_' {
			x = '-'
		}
		if y == '_' {
			y = '-'
		}
		if x != y && lower(x) != lower(y) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func containsFold(list []string, k string) bool {
	for _, s := range list {
		if strings.EqualFold(s, k) {
			return true
		}
	}
	return false
}

// skipRequestHeader reports the agent's headers that never go upstream:
// hop-by-hop headers (Proxy-Authorization among them), forwarding headers,
// and those the proxy writes itself.
func skipRequestHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
		"Host", "Content-Length":
		return true
	}
	return false
}

// hopHeaders are removed from responses (as httputil.ReverseProxy does).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// copyEndToEnd copies src to dst without the headers removeHopByHop
// removes. Without a Connection header that is the fixed list, skipped as
// it is copied instead of deleted one by one (nine map deletes per
// response); src then keeps them.
func copyEndToEnd(dst, src http.Header) {
	if _, ok := src["Connection"]; ok {
		removeHopByHop(src)
	}
	for k, vv := range src {
		if isHopHeader(k) {
			continue
		}
		dst[k] = vv
	}
}

// isHopHeader reports whether k is in hopHeaders.
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// appendRequestURI appends the origin-form target: the escaped path (or
// "/") and the query, cleaned as httputil.ReverseProxy cleans it.
func appendRequestURI(b []byte, u *url.URL) []byte {
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	b = append(b, p...)
	if u.ForceQuery || u.RawQuery != "" {
		b = append(b, '?')
		b = append(b, cleanQuery(u.RawQuery)...)
	}
	return b
}

// cleanQuery drops query parameters that servers could split differently
// (";" separators, bad escapes), re-encoding the rest, as ReverseProxy does.
func cleanQuery(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	if strings.Count(s, "&")+1 > 10000 {
		return reencode(s)
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// relay writes the response header and streams the body to the client. It
// reports whether the connection may carry another request, and whether
// the client's response was cut off.
func (p *Proxy) relay(w http.ResponseWriter, r *http.Request, rs *reqState, c *upConn, resp *http.Response) (reuse, abort bool) {
	rs.mu.Lock()
	rs.status = resp.StatusCode
	rs.mu.Unlock()
	h := w.Header()
	copyEndToEnd(h, resp.Header)
	if _, ok := h["Content-Type"]; !ok {
		// A nil value stops net/http's server from sniffing the body and
		// adding a type the origin never sent.
		h["Content-Type"] = nil
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	if resp.Body != http.NoBody {
		// Streams (server-sent events, bodies of unknown length) are
		// flushed as they arrive; the rest is batched by the server.
		stream := resp.ContentLength < 0 || isEventStream(resp.Header)
		if err := p.copyBody(w, resp.Body, rs, stream, c); err != nil {
			if !errors.Is(err, errClientWrite) {
				p.log.Debug("upstream body read failed", "host", rs.d.auth.host, "err", rs.redact(err.Error()))
			}
			return false, true
		}
	}
	if len(resp.Trailer) > 0 {
		// Force chunking, so the trailers can follow.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if len(resp.Trailer) == announced {
			for k, vv := range resp.Trailer {
				h[k] = vv
			}
		} else {
			for k, vv := range resp.Trailer {
				h[http.TrailerPrefix+k] = vv
			}
		}
	}
	return !resp.Close && c.br.Buffered() == 0, false
}

var errClientWrite = errors.New("write to client failed")

func (p *Proxy) copyBody(w http.ResponseWriter, body io.Reader, rs *reqState, stream bool, c *upConn) error {
	var f http.Flusher
	if stream {
		f, _ = w.(http.Flusher)
		if f != nil && c.br.Buffered() == 0 {
			f.Flush() // the header now, even if the body takes its time
		}
	}
	bufp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bufp)
	buf := *bufp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			rs.bytesDown.Add(int64(n))
			if _, err := w.Write(buf[:n]); err != nil {
				return errClientWrite
			}
			if f != nil {
				f.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func isEventStream(h http.Header) bool {
	vv := h["Content-Type"]
	if len(vv) == 0 {
		return false
	}
	ct := strings.TrimSpace(vv[0])
	if len(ct) < len("text/event-stream") || !strings.EqualFold(ct[:len("text/event-stream")], "text/event-stream") {
		return false
	}
	base, _, _ := mime.ParseMediaType(ct)
	return base == "text/event-stream"
}
