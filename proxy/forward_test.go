package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// rawUpstream is a TCP server on loopback whose connections are served by
// a handler the test writes, so tests can answer with exactly the bytes
// (or the misbehaviour) they need. It records every byte it received.
type rawUpstream struct {
	port  int
	conns atomic.Int32
	mu    sync.Mutex
	got   bytes.Buffer
	reqs  []string // "METHOD /path" of every request read, in order
}

// rawConn is one accepted connection: requests are read through it, so the
// bytes are recorded.
type rawConn struct {
	net.Conn
	n  int // connection index, from 1
	u  *rawUpstream
	br *bufio.Reader
}

func (c *rawConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.u.mu.Lock()
	c.u.got.Write(b[:n])
	c.u.mu.Unlock()
	return n, err
}

// readRequest reads one request and its whole body.
func (c *rawConn) readRequest() (*http.Request, []byte, error) {
	req, err := http.ReadRequest(c.br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, nil, err
	}
	c.u.mu.Lock()
	c.u.reqs = append(c.u.reqs, req.Method+" "+req.URL.Path)
	c.u.mu.Unlock()
	return req, body, nil
}

func startRaw(t *testing.T, serve func(c *rawConn)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{port: ln.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			rc := &rawConn{Conn: c, n: int(u.conns.Add(1)), u: u}
			rc.br = bufio.NewReader(rc)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(rc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

func (u *rawUpstream) received() (int, []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got.Len(), append([]string(nil), u.reqs...)
}

// serveKeepAlive answers every request on the connection with body.
func serveKeepAlive(body string) func(c *rawConn) {
	return func(c *rawConn) {
		for {
			if _, _, err := c.readRequest(); err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	}
}

// serveOnce answers one request with resp, byte for byte, and stops.
func serveOnce(resp string) func(c *rawConn) {
	return func(c *rawConn) {
		if _, _, err := c.readRequest(); err == nil {
			io.WriteString(c, resp)
		}
	}
}

const rawPolicy = "domains:\n  - domain: raw.test\n    ports: [{RAW}]\n    allow_private: true\n"

// countingServer is an httptest server that counts the connections it accepted.
func countingServer(t *testing.T, h http.Handler, tlsCert *tls.Certificate) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			n.Add(1)
		}
	}
	if tlsCert != nil {
		s.TLS = &tls.Config{Certificates: []tls.Certificate{*tlsCert}}
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s, &n
}

// TestForwardKeepAliveReuse: requests reuse the upstream connection, plain
// and TLS (through an alias, so the proxy makes the TLS connection), and
// each event names the upstream address and counts the bytes.
func TestForwardKeepAliveReuse(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	plain, plainConns := countingServer(t, h, nil)
	e := newEnv(t, withPort(rawPolicy, plain.Listener.Addr().(*net.TCPAddr).Port))
	c := e.client()
	u := plain.URL + "/"
	u = strings.Replace(u, "127.0.0.1", "raw.test", 1)
	for i := 0; i < 20; i++ {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "hello" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := plainConns.Load(); n != 1 {
		t.Fatalf("20 sequential requests used %d upstream connections, want 1", n)
	}
	for _, ev := range e.events.wait(t, 20) {
		if ev.Status != 200 || ev.BytesDown != 5 || ev.BytesUp <= 0 || ev.Upstream != plain.Listener.Addr().String() {
			t.Fatalf("event %+v", ev)
		}
	}
	// Concurrent requests: at most one connection per request in flight.
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				resp, err := c.Get(u)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if n := plainConns.Load(); n > 5 {
		t.Fatalf("4 concurrent clients used %d upstream connections", n)
	}

	// TLS, verified against the test CA, made by the proxy for an alias.
	var port int // of the TLS server, started with the second env's certificate
	e2 := newEnv(t, "domains:\n  - domain: api.test\n    alias: api\n    ports: [443]\n    allow_private: true\n", func(cfg *Config) {
		var d net.Dialer
		cfg.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if network == "tcp" { // not the DNS queries
				addr = fmt.Sprintf("127.0.0.1:%d", port)
			}
			return d.DialContext(ctx, network, addr)
		}
	})
	tlsSrv, tlsConns := countingServer(t, h, &e2.pki.server)
	port = tlsSrv.Listener.Addr().(*net.TCPAddr).Port
	for i := 0; i < 5; i++ {
		if resp, body := e2.get("http://api.devbox.local/x"); resp.StatusCode != 200 || string(body) != "hello" {
			t.Fatalf("alias request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := tlsConns.Load(); n != 1 {
		t.Fatalf("5 alias requests used %d TLS connections, want 1", n)
	}
}

// TestForwardServerClosesAfterResponse: an upstream that says Connection:
// close gets a new connection per request, and its Connection header does
// not reach the client, whose own connection stays open.
func TestForwardServerClosesAfterResponse(t *testing.T) {
	s, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	}), nil)
	port := s.Listener.Addr().(*net.TCPAddr).Port
	e := newEnv(t, withPort(rawPolicy, port))
	var clientConns atomic.Int32
	c := e.client()
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://raw.test:%d/", port), nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			if !info.Reused {
				clientConns.Add(1)
			}
		}}))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "bye" || resp.Close {
			t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, body, resp.Close)
		}
	}
	if n := conns.Load(); n != 5 {
		t.Fatalf("upstream connections %d, want 5 (one per request)", n)
	}
	if n := clientConns.Load(); n != 1 {
		t.Fatalf("client connections %d, want 1", n)
	}
}

// TestForwardBodyUntilEOF: a response without a length is read until the
// upstream closes, streamed whole, and its connection is not reused.
func TestForwardBodyUntilEOF(t *testing.T) {
	body := strings.Repeat("0123456789", 10000)
	u := startRaw(t, func(c *rawConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"+body)
	})
	e := newEnv(t, withPort(rawPolicy, u.port))
	for i := 0; i < 2; i++ {
		resp, got := e.get(fmt.Sprintf("http://raw.test:%d/eof", u.port))
		if resp.StatusCode != 200 || string(got) != body {
			t.Fatalf("request %d: %d, %d bytes", i, resp.StatusCode, len(got))
		}
	}
	if n := u.conns.Load(); n != 2 {
		t.Fatalf("upstream connections %d, want 2", n)
	}
	if ev := e.events.wait(t, 2)[1]; ev.BytesDown != int64(len(body)) || ev.Status != 200 {
		t.Fatalf("event %+v", ev)
	}
}

// TestForwardTruncatedResponse: when the upstream dies in the middle of a
// body, the client sees a broken response (not a complete shorter one),
// and the request is still recorded.
func TestForwardTruncatedResponse(t *testing.T) {
	cases := []struct{ name, resp string }{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := startRaw(t, serveOnce(tc.resp))
			e := newEnv(t, withPort(rawPolicy, u.port))
			// Either the connection ends before the (buffered) header went
			// out, or in the middle of the body: never a clean response.
			resp, err := e.client().Get(fmt.Sprintf("http://raw.test:%d/", u.port))
			if err == nil {
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Fatalf("truncated response read without error: %q", got)
				}
			}
			ev := e.events.wait(t, 1)[0]
			if ev.Status != 200 || ev.BytesDown != 10 {
				t.Fatalf("event %+v", ev)
			}
		})
	}
}

// TestForwardUploadBudgetCountsBytesSent: the budget and the event count
// exactly the bytes the upstream received (request line, headers, body and
// its chunked framing), for chunked and fixed-length uploads and GETs.
func TestForwardUploadBudgetCountsBytesSent(t *testing.T) {
	u := startRaw(t, serveKeepAlive("ok"))
	e := newEnv(t, withPort(rawPolicy+"    egress_limit: 1MiB\n", u.port))
	var chunked strings.Builder
	for i := 0; i < 300; i++ {
		chunked.WriteString("40\r\n" + strings.Repeat("c", 64) + "\r\n")
	}
	chunked.WriteString("0\r\n\r\n")
	hostport := fmt.Sprintf("raw.test:%d", u.port)
	raw := fmt.Sprintf("POST http://%s/chunked HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n%s", hostport, hostport, chunked.String()) +
		fmt.Sprintf("PUT http://%s/fixed HTTP/1.1\r\nHost: %s\r\nContent-Length: 5000\r\nProxy-Authorization: Basic eDp5\r\n\r\n%s", hostport, hostport, strings.Repeat("f", 5000)) +
		fmt.Sprintf("GET http://%s/get?q=1 HTTP/1.1\r\nHost: %s\r\nX-A: b\r\nConnection: close\r\n\r\n", hostport, hostport)
	for _, r := range rawExchange(t, e.addr, raw, 3) {
		if r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
	}
	evs := e.events.wait(t, 3)
	n, reqs := u.received()
	if strings.Join(reqs, ",") != "POST /chunked,PUT /fixed,GET /get" {
		t.Fatalf("upstream requests %v", reqs)
	}
	var up int64
	for _, ev := range evs {
		up += ev.BytesUp
	}
	if used := e.p.budget.Used("raw.test"); used != int64(n) || up != int64(n) {
		t.Fatalf("upstream received %d bytes; budget charged %d, events say %d", n, used, up)
	}
	if n < 300*64+5000 {
		t.Fatalf("upstream received only %d bytes", n)
	}
}

// TestForwardGarbageResponse: whatever an upstream sends that is not a
// valid response becomes a 502, and its connection is dropped.
func TestForwardGarbageResponse(t *testing.T) {
	cases := []struct{ name, resp string }{
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n"},
		{"bad status", "HTTP/1.1 abc OK\r\n\r\n"},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
		{"huge header", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n"},
		{"unasked switch", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"},
		{"too many 1xx", strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"nothing", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := startRaw(t, serveOnce(tc.resp))
			e := newEnv(t, withPort(rawPolicy, u.port))
			resp, err := e.client().Get(fmt.Sprintf("http://raw.test:%d/", u.port))
			if err != nil {
				if tc.name == "bad chunk" {
					return // the header was fine and went out; the body broke: aborted
				}
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tc.name == "bad chunk" {
				t.Fatalf("a broken chunked body was passed on as complete: %d %q", resp.StatusCode, body)
			}
			if resp.StatusCode != 502 || decodeDenial(t, resp, body).Error != codeUpstream {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if ev := e.events.wait(t, 1)[0]; ev.Status != 502 || ev.Error != codeUpstream {
				t.Fatalf("event %+v", ev)
			}
		})
	}
}

// TestForwardStaleConnection: a pooled connection the upstream closed
// while it was idle is not used; a request that fails on a reused
// connection before any answer is sent again on a new connection only when
// it is idempotent and has no body. Anything else fails closed with a 502,
// and the upstream never sees a non-idempotent request twice.
func TestForwardStaleConnection(t *testing.T) {
	// Answers one request per connection, then closes it without saying so.
	u := startRaw(t, serveOnce("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	e := newEnv(t, withPort(rawPolicy, u.port))
	base := fmt.Sprintf("http://raw.test:%d/", u.port)
	do := func(method, path string, body io.Reader) int {
		req, _ := http.NewRequest(method, base+path, body)
		resp, _ := e.do(req)
		return resp.StatusCode
	}
	if s := do("GET", "a", nil); s != 200 {
		t.Fatalf("first GET %d", s)
	}
	time.Sleep(50 * time.Millisecond) // the upstream has closed the idle connection
	if s := do("GET", "b", nil); s != 200 {
		t.Fatalf("GET on a stale connection: %d, want a retry on a new one", s)
	}
	time.Sleep(50 * time.Millisecond)
	if s := do("POST", "c", strings.NewReader("payload")); s != 200 {
		t.Fatalf("POST after a stale connection: %d (the idle check should have found it closed)", s)
	}
	if _, reqs := u.received(); strings.Join(reqs, ",") != "GET /a,GET /b,POST /c" {
		t.Fatalf("upstream saw %v", reqs)
	}

	// Reads the second request of a connection and closes without an
	// answer: the race a retry exists for.
	u2 := startRaw(t, func(c *rawConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.readRequest()
	})
	e2 := newEnv(t, withPort(rawPolicy, u2.port))
	base = fmt.Sprintf("http://raw.test:%d/", u2.port)
	do2 := func(method, path string, body io.Reader) int {
		req, _ := http.NewRequest(method, base+path, body)
		resp, _ := e2.do(req)
		return resp.StatusCode
	}
	if s := do2("GET", "1", nil); s != 200 {
		t.Fatalf("GET 1: %d", s)
	}
	if s := do2("GET", "2", nil); s != 200 { // dropped, retried on a new connection
		t.Fatalf("GET 2: %d", s)
	}
	if s := do2("POST", "3", strings.NewReader("once")); s != 502 { // dropped: not retried
		t.Fatalf("POST 3: %d, want 502", s)
	}
	if s := do2("DELETE", "4", nil); s != 200 { // the failed connection was not pooled
		t.Fatalf("DELETE 4: %d", s)
	}
	if _, reqs := u2.received(); strings.Join(reqs, ",") != "GET /1,GET /2,GET /2,POST /3,DELETE /4" {
		t.Fatalf("upstream saw %v", reqs)
	}

	// Says 408 on an idle connection and closes it: the idle check finds
	// it (or, when the 408 arrives just after the check, it is read as the
	// answer and the request is sent again on a new connection).
	u3 := startRaw(t, func(c *rawConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		time.Sleep(20 * time.Millisecond)
		io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	})
	e3 := newEnv(t, withPort(rawPolicy, u3.port))
	for i := 1; i <= 2; i++ {
		if resp, _ := e3.get(fmt.Sprintf("http://raw.test:%d/%d", u3.port, i)); resp.StatusCode != 200 {
			t.Fatalf("GET %d after an idle 408: %d", i, resp.StatusCode)
		}
		time.Sleep(60 * time.Millisecond)
	}
}

// TestForwardStreams: server-sent events and bodies of unknown length
// reach the client as they are produced, not when the response ends.
func TestForwardStreams(t *testing.T) {
	for _, ct := range []string{"text/event-stream; charset=utf-8", "application/x-ndjson"} {
		t.Run(ct, func(t *testing.T) {
			release := make(chan struct{})
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				io.WriteString(w, "data: first\n\n")
				w.(http.Flusher).Flush()
				<-release
				io.WriteString(w, "data: second\n\n")
			}))
			t.Cleanup(s.Close)
			t.Cleanup(func() {
				select {
				case <-release:
				default:
					close(release)
				}
			})
			port := s.Listener.Addr().(*net.TCPAddr).Port
			e := newEnv(t, withPort(rawPolicy, port))
			resp, err := e.client().Get(fmt.Sprintf("http://raw.test:%d/events", port))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n')
			if err != nil || line != "data: first\n" {
				t.Fatalf("first event: %q %v", line, err)
			}
			close(release)
			rest, _ := io.ReadAll(br)
			if string(rest) != "\ndata: second\n\n" {
				t.Fatalf("rest %q", rest)
			}
		})
	}
}

// TestForwardResponseSemantics: HEAD, 204 and 304 carry no body; 1xx
// responses are passed on before the final one; trailers arrive as
// trailers; hop-by-hop response headers are removed.
func TestForwardResponseSemantics(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/head":
			h.Set("Content-Length", "1234")
			if r.Method != "HEAD" {
				w.Write(make([]byte, 1234))
			}
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.WriteHeader(304)
		case "/hints":
			h.Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(103)
			h.Del("Link")
			io.WriteString(w, "final")
		case "/trailer":
			h.Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			h.Set("X-Sum", "42")
		case "/hop":
			h.Set("Connection", "X-Private")
			h.Set("X-Private", "hop")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("Proxy-Authenticate", "Basic")
			h.Set("X-End", "kept")
			io.WriteString(w, "hop")
		}
	}))
	t.Cleanup(s.Close)
	port := s.Listener.Addr().(*net.TCPAddr).Port
	e := newEnv(t, withPort(rawPolicy, port))
	base := fmt.Sprintf("http://raw.test:%d", port)
	c := e.client()

	resp, err := c.Head(base + "/head")
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != 1234 {
		t.Fatalf("HEAD: %v %+v", err, resp)
	}
	resp.Body.Close()
	for _, code := range []int{204, 304} {
		resp, body := e.get(fmt.Sprintf("%s/%d", base, code))
		if resp.StatusCode != code || len(body) != 0 {
			t.Fatalf("%d: %d %q", code, resp.StatusCode, body)
		}
	}
	// A GET after the bodiless answers still works on the same connections.
	if resp, body := e.get(base + "/head"); resp.StatusCode != 200 || len(body) != 1234 {
		t.Fatalf("GET /head: %d %d", resp.StatusCode, len(body))
	}

	var hints []string
	req, _ := http.NewRequest("GET", base+"/hints", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		},
	}))
	resp, body := e.do(req)
	if resp.StatusCode != 200 || string(body) != "final" || len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" || resp.Header.Get("Link") != "" {
		t.Fatalf("1xx: %d %q hints %q link %q", resp.StatusCode, body, hints, resp.Header.Get("Link"))
	}

	resp, body = e.get(base + "/trailer")
	if string(body) != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("trailer: %q %v", body, resp.Trailer)
	}

	resp, body = e.get(base + "/hop")
	if string(body) != "hop" || resp.Header.Get("X-End") != "kept" {
		t.Fatalf("hop: %q %v", body, resp.Header)
	}
	for _, h := range []string{"X-Private", "Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("client received hop-by-hop %s: %q", h, v)
		}
	}
}

// TestForwardExpectContinue: a body announced with Expect: 100-continue
// goes through whole.
func TestForwardExpectContinue(t *testing.T) {
	e := newEnv(t, basicPolicy)
	body := strings.Repeat("e", 100<<10)
	rs := rawExchange(t, e.addr, fmt.Sprintf("POST http://echo.test:%d/ HTTP/1.1\r\nHost: echo.test\r\nExpect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", e.echo.plainPort, len(body), body), 1)
	got, _ := io.ReadAll(rs[0].Body)
	if rs[0].StatusCode != 200 || decodeEcho(t, got).Body != len(body) {
		t.Fatalf("%d %s", rs[0].StatusCode, got)
	}
}

// TestForwardClientGone: a client that gives up while the upstream is
// still thinking ends the upstream request too (the handler does not wait
// for the upstream), and the request is recorded.
func TestForwardClientGone(t *testing.T) {
	e := newEnv(t, basicPolicy)
	c := e.client()
	c.Timeout = 200 * time.Millisecond
	start := time.Now()
	if _, err := c.Get(fmt.Sprintf("http://echo.test:%d/slow", e.echo.plainPort)); err == nil {
		t.Fatal("expected the client timeout")
	}
	e.events.wait(t, 1)
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("the proxy held the request %v after the client left", d)
	}
}

// TestForwardNoGoroutinesLeft: the forwarder starts no goroutine per
// request or per upstream connection; once clients and pools are closed,
// nothing is left behind, including after aborted and failed requests.
func TestForwardNoGoroutinesLeft(t *testing.T) {
	trunc := startRaw(t, serveOnce("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"))
	e := newEnv(t, withPort(basicPolicy+"  - domain: raw.test\n    ports: [{RAW}]\n    allow_private: true\n", trunc.port))
	ignore := goleak.IgnoreCurrent()
	func() {
		tr := &http.Transport{Proxy: e.client().Transport.(*http.Transport).Proxy}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		for i := 0; i < 50; i++ {
			resp, err := c.Get(fmt.Sprintf("http://echo.test:%d/x", e.echo.plainPort))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if resp, err := c.Get(fmt.Sprintf("http://raw.test:%d/", trunc.port)); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if resp, err := c.Get("http://unlisted.test/"); err == nil {
			resp.Body.Close()
		}
	}()
	e.p.state().pool.closeAll()
	e.echo.plain.CloseClientConnections()
	goleak.VerifyNone(t, ignore)
}

// TestForwardIPv6Literal: an IPv6 destination goes out with a bracketed
// Host header and is dialed at exactly that address.
func TestForwardIPv6Literal(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(echoHandler))
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	port := ln.Addr().(*net.TCPAddr).Port
	e := newEnv(t, "ip_ranges:\n  - {cidr: \"::1/128\"}\n")
	resp, body := e.get(fmt.Sprintf("http://[::1]:%d/v6?a=1", port))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ec := decodeEcho(t, body); ec.Host != fmt.Sprintf("[::1]:%d", port) || ec.Path != "/v6" || ec.Query != "a=1" {
		t.Fatalf("echo %+v", ec)
	}
	if d := e.dials.all(); len(d) != 1 || d[0] != fmt.Sprintf("[::1]:%d", port) {
		t.Fatalf("dials %v", d)
	}
}
