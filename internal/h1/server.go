// Package h1 serves HTTP/1.1 for the proxy: on its explicit and port-80
// listeners, where every plain-HTTP request of a sandboxed agent arrives,
// and inside intercepted TLS tunnels.
//
// Requests are parsed by net/http's own parser (http.ReadRequest: request
// line, header block, Content-Length and Transfer-Encoding framing, with the
// checks net/http's server adds: a Host header on HTTP/1.1, valid header
// fields, the header size limit, Expect). What this package does itself is
// the connection loop around the parser and the response writer.
//
// Why not net/http's server: for every request it makes a context and
// starts a goroutine that blocks in a read of the client connection (to
// notice a client that leaves), then aborts that read when the handler
// returns: a goroutine, a read that finds nothing, a wake-up and two
// deadline changes per request, 13% of the user-space instructions of a
// proxied request. Here one context lives as long as the connection, and a
// request gets the read that notices a client leaving only once it has run
// for WatchDelay (a scan, every WatchDelay/2 while requests are in flight,
// finds it): a request answered sooner needs none, and one that waits
// longer (a slow upstream, a long poll, a stream) is cancelled as soon as
// its client goes away, or at the latest 1.5 × WatchDelay after it started.
package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// DefaultWatchDelay is Server.WatchDelay when it is 0.
const DefaultWatchDelay = 20 * time.Millisecond

// Server serves HTTP/1.1 requests to Handler. Set its fields before Serve;
// it is safe for concurrent use after.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's header block; 0: none.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request for that
	// long; 0: none.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and header block (431 above
	// it); 0: http.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// ConnContext, if set, derives each connection's context (which every
	// request on it carries) from the server's.
	ConnContext func(context.Context, net.Conn) context.Context
	// WatchDelay is how long a request runs before the server starts
	// reading its connection to notice the client leaving; 0:
	// DefaultWatchDelay.
	WatchDelay time.Duration
	// ErrorLog receives handler panics and bad response headers; nil: log's
	// standard logger.
	ErrorLog *log.Logger

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	scanning  atomic.Bool // a scan goroutine runs
}

// Serve accepts connections on ln and serves each on its own goroutine. It
// returns http.ErrServerClosed after Close, else the accept error.
func (s *Server) Serve(ln net.Listener) error {
	if !s.addListener(ln) {
		return http.ErrServerClosed
	}
	defer s.removeListener(ln)
	var tempDelay time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// As net/http: back off on a temporary failure (too many
				// open files, say) instead of spinning.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.logf("h1: accept error: %v; retrying in %v", err, tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			return err
		}
		tempDelay = 0
		c := s.newConn(rwc)
		if !s.track(c) {
			rwc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// Close closes the listeners and every connection not hijacked. Handlers
// still running see their connection fail; Close does not wait for them.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.rwc.Close()
	}
	return nil
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) addListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) removeListener(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, ln)
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

func (s *Server) maxHeaderBytes() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes)
	}
	return http.DefaultMaxHeaderBytes
}

func (s *Server) watchDelay() time.Duration {
	if s.WatchDelay > 0 {
		return s.WatchDelay
	}
	return DefaultWatchDelay
}

// deadline is now+d, or no deadline when d is 0.
func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

var bufPool = sync.Pool{New: func() any { return new(connBufs) }}

// connBufs are a connection's buffers, reused by later connections (a
// hijacked connection keeps its reader).
type connBufs struct {
	br *bufio.Reader
	bw *bufio.Writer
}

// conn is one client connection. Its goroutine runs the handler for each
// request in turn.
type conn struct {
	s      *Server
	rwc    net.Conn
	remote string
	ctx    context.Context
	cancel context.CancelFunc
	r      connReader
	bufs   *connBufs
	br     *bufio.Reader
	bw     *bufio.Writer
	w      response // reused for every request

	lastMethod string
	// tap records the bytes of the request being parsed, for the checks
	// http.ReadRequest leaves to the server (it drops the Host header).
	tap     []byte
	tapping bool

	// started is when the request in flight started (monoNow), 0 when
	// none; firedOnce: the scan fired it.
	started   atomic.Int64
	firedOnce atomic.Bool

	// mu guards the watch state, which the timer, the body (on another
	// goroutine, for a transport reading it) and the handler's goroutine
	// change.
	mu        sync.Mutex
	reqDone   bool // the handler returned, or hijacked the connection
	bodyDone  bool // the request body reached EOF (or there is none)
	fired     bool // the request has run for WatchDelay
	watching  bool // a watch goroutine runs
	stopWatch bool
	watchDone chan struct{}
	gone      bool // the client went away (EOF or an error on read)
}

func (s *Server) newConn(rwc net.Conn) *conn {
	c := &conn{s: s, rwc: rwc, remote: rwc.RemoteAddr().String()}
	ctx := context.Background()
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, rwc)
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.r.c = c
	c.bufs = bufPool.Get().(*connBufs)
	if c.bufs.br == nil {
		c.bufs.br = bufio.NewReaderSize(&c.r, 4<<10)
		c.bufs.bw = bufio.NewWriterSize(rwc, 4<<10)
	} else {
		c.bufs.br.Reset(&c.r)
		c.bufs.bw.Reset(rwc)
	}
	c.br, c.bw = c.bufs.br, c.bufs.bw
	c.w.c = c
	c.w.h = http.Header{}
	return c
}

// errTooLarge: the header block passed the limit.
var errTooLarge = errors.New("h1: request header too large")

// connReader reads the client connection for the bufio.Reader: it bounds
// the header block, hands back the byte a watch read, and records what the
// parser reads while tapping.
type connReader struct {
	c       *conn
	limited bool
	remain  int64
	hasByte bool
	b       [1]byte
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.limited {
		if r.remain <= 0 {
			return 0, errTooLarge
		}
		if int64(len(p)) > r.remain {
			p = p[:r.remain]
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if r.hasByte {
		p[0], r.hasByte, n = r.b[0], false, 1
	} else {
		n, err = r.c.rwc.Read(p)
	}
	r.remain -= int64(n)
	if r.c.tapping {
		r.c.tap = append(r.c.tap, p[:n]...)
	}
	return n, err
}

// badRequest is an answer to a request that could not be read.
type badRequest struct {
	code int
	text string
}

func (e *badRequest) Error() string { return e.text }

func (c *conn) serve() {
	defer func() {
		if err := recover(); err != nil && err != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.s.logf("h1: panic serving %s: %v\n%s", c.remote, err, buf)
		}
		c.cancel()
		c.s.untrack(c)
		if !c.w.hijacked {
			c.rwc.Close()
			// A goroutine the handler left reading the body (a transport's)
			// must not read the buffer once another connection has it.
			c.w.closeBody()
			c.bufs.br.Reset(nil)
			c.bufs.bw.Reset(nil)
			bufPool.Put(c.bufs)
		}
	}()
	c.rwc.SetReadDeadline(deadline(c.s.ReadHeaderTimeout))
	for {
		req, err := c.readRequest()
		if err != nil {
			c.refuse(err)
			return
		}
		w := &c.w
		w.reset(req)
		// As net/http: the first Expect line only, and an empty one is none.
		if ex := req.Header["Expect"]; len(ex) > 0 && ex[0] != "" {
			if !httpguts.HeaderValuesContainsToken(ex[:1], "100-continue") {
				io.WriteString(c.rwc, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				return
			}
			if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
				w.expect100 = true
			}
		}
		c.startRequest(req)
		c.s.Handler.ServeHTTP(w, req)
		c.endRequest()
		if w.hijacked {
			return
		}
		if w.body != nil && !c.bodyIsDone() {
			// A goroutine the handler left reading the body stops now
			// (lingeringClose sets its own deadline).
			c.rwc.SetReadDeadline(aLongTimeAgo)
		}
		w.closeBody() // before the answer goes out: no read after the request
		if !w.finish() {
			return
		}
		c.lastMethod = req.Method
		c.rwc.SetReadDeadline(deadline(c.s.IdleTimeout))
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		c.rwc.SetReadDeadline(deadline(c.s.ReadHeaderTimeout))
	}
}

// readRequest reads and checks the next request; its context is the
// connection's.
func (c *conn) readRequest() (*http.Request, error) {
	if c.lastMethod == http.MethodPost {
		// As net/http: some clients send a CRLF after a POST body.
		peek, _ := c.br.Peek(4)
		n := 0
		for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
			n++
		}
		c.br.Discard(n)
	}
	c.r.limited, c.r.remain = true, c.s.maxHeaderBytes()+4096 // as net/http: room for the bufio buffer
	buffered, _ := c.br.Peek(c.br.Buffered())
	c.tap = append(c.tap[:0], buffered...)
	c.tapping = true
	req, err := http.ReadRequest(c.br)
	c.tapping = false
	tooLarge := c.r.limited && c.r.remain <= 0
	c.r.limited = false
	if err != nil {
		if tooLarge {
			return nil, errTooLarge
		}
		return nil, err
	}
	if req.ProtoMajor != 1 {
		return nil, &badRequest{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	host, n := headerValue(c.tap, "host")
	if cap(c.tap) > 16<<10 {
		c.tap = nil
	}
	if req.ProtoAtLeast(1, 1) && n == 0 && req.Method != http.MethodConnect {
		return nil, &badRequest{http.StatusBadRequest, "missing required Host header"}
	}
	if n == 1 && !httpguts.ValidHostHeader(host) {
		return nil, &badRequest{http.StatusBadRequest, "malformed Host header"}
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, &badRequest{http.StatusBadRequest, "invalid header name"}
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, &badRequest{http.StatusBadRequest, "invalid header value"}
			}
		}
	}
	req.RemoteAddr = c.remote
	if req.Body != http.NoBody {
		// The header's deadline does not bound the body (net/http's
		// server has no ReadTimeout here either).
		c.rwc.SetReadDeadline(time.Time{})
	}
	return req.WithContext(c.ctx), nil
}

// headerValue finds the field name (lower case) in the header block that
// starts raw (a request line, then fields, then an empty line): the value
// of its first line as textproto makes it (trimmed, continuation lines
// joined with a space), and how many lines carry it.
func headerValue(raw []byte, name string) (string, int) {
	_, raw = nextLine(raw) // the request line
	var val string
	n := 0
	for len(raw) > 0 {
		var line []byte
		line, raw = nextLine(raw)
		if len(line) == 0 {
			break // the end of the header block
		}
		if len(line) <= len(name) || line[len(name)] != ':' || !asciiEqualFold(line[:len(name)], name) {
			continue
		}
		if n == 0 {
			val = strings.Trim(string(line[len(name)+1:]), " \t")
			// obs-fold: a line that starts with a space or tab continues
			// the value.
			for rest := raw; len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t'); {
				var cont []byte
				cont, rest = nextLine(rest)
				val = strings.TrimLeft(val+" "+strings.Trim(string(cont), " \t"), " \t")
			}
		}
		n++
	}
	return val, n
}

// nextLine splits raw after its first line, which it returns without the
// line end (LF or CRLF).
func nextLine(raw []byte) (line, rest []byte) {
	end := bytes.IndexByte(raw, '\n')
	if end < 0 {
		line, rest = raw, nil
	} else {
		line, rest = raw[:end], raw[end+1:]
	}
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest
}

func asciiEqualFold(b []byte, lower string) bool {
	for i := range b {
		x := b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != lower[i] {
			return false
		}
	}
	return true
}

// refuse answers a request that could not be read, as net/http's server
// does, and the connection ends.
func (c *conn) refuse(err error) {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var br *badRequest
	switch {
	case err == errTooLarge:
		const msg = "431 Request Header Fields Too Large"
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
		c.lingeringClose()
	case strings.HasPrefix(err.Error(), "unsupported transfer encoding"), strings.HasPrefix(err.Error(), "too many transfer encodings"):
		io.WriteString(c.rwc, "HTTP/1.1 501 Not Implemented"+errorHeaders+"Unsupported transfer encoding")
	case isCommonNetReadError(err):
		// The client left, or sent nothing in time: nobody to answer.
	case errors.As(err, &br):
		msg := fmt.Sprintf("%d %s: %s", br.code, http.StatusText(br.code), br.text)
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
	default:
		const msg = "400 Bad Request"
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
	}
}

func isCommonNetReadError(err error) bool {
	if err == io.EOF {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}

// lingeringClose ends the connection after an answer sent while the client
// may still be sending: closing a socket with unread bytes resets the
// connection, and the reset can destroy the answer before the client reads
// it. So: stop sending, then read (and drop) for up to half a second.
func (c *conn) lingeringClose() {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.rwc.(closeWriter); ok {
		cw.CloseWrite()
	}
	c.rwc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, c.rwc, 1<<20)
}

// startRequest marks a request in flight, for the scan.
func (c *conn) startRequest(req *http.Request) {
	c.mu.Lock()
	c.reqDone, c.fired, c.stopWatch = false, false, false
	c.bodyDone = req.Body == http.NoBody || req.Body == nil
	c.mu.Unlock()
	c.firedOnce.Store(false) // a scan that saw the last request may have set it after endRequest
	c.started.Store(int64(monoNow()))
	c.s.ensureScan()
}

// fire runs when a request has taken WatchDelay.
func (c *conn) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fired = true
	c.maybeWatchLocked()
}

// monoBase is the origin of monoNow, which reads only the monotonic clock.
var monoBase = time.Now()

func monoNow() time.Duration { return time.Since(monoBase) }

// ensureScan starts the scan unless it runs. A timer per request would be
// simpler, but arming one that fires sooner than anything the runtime
// waits for makes it wake its network poller: a system call and a
// wake-up per request, what this package exists to avoid.
func (s *Server) ensureScan() {
	if !s.scanning.Load() && s.scanning.CompareAndSwap(false, true) {
		go s.scan()
	}
}

// scan fires the requests that have run for WatchDelay, every half of it,
// for as long as requests are in flight.
func (s *Server) scan() {
	delay := s.watchDelay()
	t := time.NewTicker(delay / 2)
	defer t.Stop()
	for range t.C {
		if s.fireLong(delay) {
			continue
		}
		s.scanning.Store(false)
		// A request that started as the flag went down saw it up and
		// relies on this scan: look once more.
		if !s.fireLong(delay) || !s.scanning.CompareAndSwap(false, true) {
			return
		}
	}
}

// fireLong fires the requests in flight for delay or longer, and reports
// whether any request is in flight.
func (s *Server) fireLong(delay time.Duration) bool {
	now := int64(monoNow())
	busy := false
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	for c := range s.conns {
		start := c.started.Load()
		if start == 0 {
			continue
		}
		busy = true
		if now-start >= int64(delay) && !c.firedOnce.Load() {
			c.firedOnce.Store(true)
			c.fire()
		}
	}
	return busy
}

// bodyEOF runs when the request body reaches its end.
func (c *conn) bodyEOF() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bodyDone = true
	c.maybeWatchLocked()
}

// maybeWatchLocked starts the watch of a request that has run long and
// whose body has been read: then nothing else reads the connection until
// the handler returns.
func (c *conn) maybeWatchLocked() {
	if c.reqDone || c.watching || !c.bodyDone || !c.fired || c.r.hasByte || c.gone {
		return
	}
	c.watching, c.stopWatch = true, false
	c.watchDone = make(chan struct{})
	go c.watch(c.watchDone)
}

// watch reads one byte: EOF or an error means the client went away, and
// cancels the connection's context (the request's); a byte is the start of
// a pipelined request, kept for the next read.
func (c *conn) watch(done chan struct{}) {
	defer close(done)
	c.mu.Lock()
	if c.stopWatch {
		c.mu.Unlock()
		return
	}
	// The header's read deadline no longer applies.
	c.rwc.SetReadDeadline(time.Time{})
	c.mu.Unlock()
	n, err := c.rwc.Read(c.r.b[:])
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case n == 1:
		c.r.hasByte = true
	case err != nil && !(c.stopWatch && isTimeout(err)):
		c.gone = true
		c.cancel()
	}
}

// endRequest stops the watch (and waits for it) once the handler is done
// with the connection.
func (c *conn) endRequest() {
	c.started.Store(0)
	c.firedOnce.Store(false)
	c.mu.Lock()
	c.reqDone = true
	watching := c.watching
	if watching {
		c.stopWatch = true
		c.rwc.SetReadDeadline(aLongTimeAgo)
	}
	c.mu.Unlock()
	if watching {
		<-c.watchDone
		c.mu.Lock()
		c.watching = false
		c.mu.Unlock()
	}
}

var aLongTimeAgo = time.Unix(1, 0)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// body wraps a request body: it sends 100 Continue before the first read
// when the client waits for one, reports EOF to the watch, does not drain
// the rest on Close (the server decides what to do with it), and fails
// every read once the request is over.
type body struct {
	rc     io.ReadCloser
	w      *response
	mu     sync.Mutex // held across a read, so that close waits for it
	eof    bool
	closed bool
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, http.ErrBodyReadAfterClose
	case b.eof:
		return 0, io.EOF
	}
	if b.w.expect100 {
		b.w.continue100()
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
		b.w.c.bodyEOF()
	}
	return n, err
}

func (b *body) Close() error { return nil }

// close ends the body for good (after the request).
func (b *body) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}
