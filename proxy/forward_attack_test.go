package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"go.uber.org/goleak"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Adversarial tests of the hand-written forwarder (forward.go): request
// smuggling and response desync between agent, proxy and upstream, header
// hygiene around the credential, and what reaches logs.

// firstThenFresh is an upstream that answers the first request it gets (on
// any connection) with first, which returns false to end that connection,
// and every later request with a clean 200 "fresh": a leftover byte of the
// first answer shows up as a wrong answer to a later request.
func firstThenFresh(first func(c *rawConn) bool) func(c *rawConn) {
	var served atomic.Int32
	return func(c *rawConn) {
		for {
			if _, _, err := c.readRequest(); err != nil {
				return
			}
			if served.Add(1) > 1 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
				continue
			}
			if !first(c) {
				return
			}
		}
	}
}

// TestForwardNoResponsePoisoning: bytes an upstream sends past the end of a
// response (a body on a 204, 304 or HEAD answer, more than Content-Length
// said, a second response) never become the answer to the next request on
// the pooled connection, however soon that request comes and whether or
// not it could be retried.
func TestForwardNoResponsePoisoning(t *testing.T) {
	const evil = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Evil: 1\r\n\r\npoisoned"
	cases := []struct {
		name   string
		method string
		first  string // the answer to the first request
		split  bool   // send the extra bytes after a pause (a separate segment)
	}{
		{"204 with body", "GET", "HTTP/1.1 204 No Content\r\n\r\n" + evil, false},
		{"204 then body later", "GET", "HTTP/1.1 204 No Content\r\n\r\n" + evil, true},
		{"304 then body later", "GET", "HTTP/1.1 304 Not Modified\r\n\r\n" + evil, true},
		{"HEAD then body later", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n" + evil, true},
		{"extra after length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + evil, false},
		{"extra after length later", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + evil, true},
		{"extra after large body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n" + strings.Repeat("b", 40000) + evil, false},
		{"extra after chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + evil, true},
		{"1xx then final then extra", "GET", "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + evil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := startRaw(t, firstThenFresh(func(c *rawConn) bool {
				head, rest := tc.first, ""
				if tc.split {
					i := strings.Index(tc.first, evil)
					head, rest = tc.first[:i], tc.first[i:]
				}
				io.WriteString(c, head)
				if rest != "" {
					time.Sleep(30 * time.Millisecond)
					io.WriteString(c, rest)
				}
				return true
			}))
			e := newEnv(t, withPort(rawPolicy, u.port))
			c := e.client()
			base := fmt.Sprintf("http://raw.test:%d", u.port)
			req, _ := http.NewRequest(tc.method, base+"/first", nil)
			resp, err := c.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			time.Sleep(80 * time.Millisecond) // the extra bytes have arrived
			for _, m := range []string{"GET", "POST", "GET"} {
				req, _ := http.NewRequest(m, base+"/next", strings.NewReader(""))
				resp, body := e.do(req)
				if resp.Header.Get("X-Evil") != "" || string(body) == "poisoned" {
					t.Fatalf("%s /next got the upstream's stray bytes as its answer: %d %q", m, resp.StatusCode, body)
				}
				if resp.StatusCode != 200 || string(body) != "fresh" {
					t.Fatalf("%s /next: %d %q", m, resp.StatusCode, body)
				}
			}
		})
	}
}

// parseUpstream parses everything an upstream received as a sequence of
// requests, failing on bytes that are not a well-framed request and on a
// request framed two ways (or by anything but chunked or Content-Length).
func parseUpstream(t *testing.T, raw []byte) []string {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	var paths []string
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return paths
		}
		req, err := http.ReadRequest(br)
		if err == io.ErrUnexpectedEOF {
			return paths // a request cut off (the agent's body broke): the connection was closed
		}
		if err != nil {
			t.Fatalf("upstream received bytes that are not a request after %v: %v\n%q", paths, err, raw)
		}
		te, cl := req.Header.Values("Transfer-Encoding"), req.Header.Values("Content-Length")
		if len(te)+len(cl) > 1 || len(te) == 1 && te[0] != "chunked" || len(req.TransferEncoding) > 0 && len(cl) > 0 {
			t.Fatalf("request %s framed ambiguously: TE %q CL %q", req.URL.Path, te, cl)
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			if err == io.ErrUnexpectedEOF {
				return paths
			}
			t.Fatalf("request %s body: %v", req.URL.Path, err)
		}
		paths = append(paths, req.Method+" "+req.URL.Path)
	}
}

// TestForwardRequestSmuggling: ambiguous or malformed framing from the
// agent, each followed by a pipelined request, never makes the upstream
// see a request the proxy did not check and record: what the upstream
// receives parses as exactly the requests the proxy forwarded, each framed
// one way, and a body's bytes never become a request of their own.
func TestForwardRequestSmuggling(t *testing.T) {
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: raw.test\r\n\r\n"
	cases := []struct {
		name string
		req  string // head lines after the request line, then the body
	}{
		{"cl and te", "Content-Length: 47\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"te and cl", fmt.Sprintf("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)},
		{"big chunked body broken", "Transfer-Encoding: chunked\r\n\r\n" + strings.Repeat("4000\r\n"+strings.Repeat("z", 0x4000)+"\r\n", 4) + "5\r\nhelloXX\r\n0\r\n\r\n" + smuggled},
		{"two lengths", "Content-Length: 5\r\nContent-Length: 48\r\n\r\nhello" + smuggled},
		{"length list", "Content-Length: 5, 48\r\n\r\nhello" + smuggled},
		{"same length twice", "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"},
		{"plus length", "Content-Length: +5\r\n\r\nhello"},
		{"hex length", "Content-Length: 0x5\r\n\r\nhello"},
		{"negative length", "Content-Length: -1\r\n\r\nhello"},
		{"chunked identity", "Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"identity chunked", "Transfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"te twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"te capitalised", "Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"te space before colon", "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello"},
		{"te tab value", "Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"te obs-fold", "Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"te xchunked", "Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"chunk extension", "Transfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d\"\r\nhello\r\n0;x\r\n\r\n"},
		{"chunk trailing junk", "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n" + smuggled},
		{"chunk size overflow", "Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" + smuggled},
		{"chunk size space", "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"},
		{"chunk bare lf", "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"},
		{"chunk missing last", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" + smuggled},
		{"bare lf head", "X-A: 1\nContent-Length: 5\n\nhello"},
		{"obs-fold header", "X-A: 1\r\n  continued\r\nContent-Length: 5\r\n\r\nhello"},
		{"nul in header", "X-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello"},
		{"cr in header", "X-A: a\rContent-Length: 48\r\nContent-Length: 5\r\n\r\nhello"},
		{"get with body", "Content-Length: 48\r\n\r\n" + smuggled},
		{"expect continue", "Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"},
		{"connection lists framing", "Connection: Content-Length, Transfer-Encoding, Host\r\nContent-Length: 5\r\n\r\nhello"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := startRaw(t, serveKeepAlive("ok"))
			e := newEnv(t, withPort(rawPolicy, u.port))
			hp := fmt.Sprintf("raw.test:%d", u.port)
			method := "POST"
			if tc.name == "get with body" {
				method = "GET"
			}
			raw := fmt.Sprintf("%s http://%s/body HTTP/1.1\r\nHost: %s\r\n%s", method, hp, hp, tc.req) +
				fmt.Sprintf("GET http://%s/after HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", hp, hp)
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, raw)
			var statuses []int
			br := bufio.NewReader(c)
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					break
				}
				io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != 100 {
					statuses = append(statuses, resp.StatusCode)
				}
			}
			c.Close()
			// Every request the upstream saw was checked and recorded.
			time.Sleep(20 * time.Millisecond)
			var forwarded []string
			for _, ev := range e.events.all() {
				if ev.Status == 200 { // answered by the upstream
					forwarded = append(forwarded, ev.Method+" "+ev.Path)
				}
			}
			u.mu.Lock()
			got := append([]byte(nil), u.got.Bytes()...)
			u.mu.Unlock()
			paths := parseUpstream(t, got)
			if strings.Join(paths, ",") != strings.Join(forwarded, ",") {
				t.Fatalf("upstream parsed %v, proxy forwarded %v (client saw %v)", paths, forwarded, statuses)
			}
			for _, p := range paths {
				if strings.HasSuffix(p, "/smuggled") {
					t.Fatalf("a body became a request upstream: %v", paths)
				}
			}
			t.Logf("client saw %v, upstream %v", statuses, paths)
		})
	}
}

// TestForwardHeaderHygiene: whatever the agent sends, the upstream gets
// exactly one credential header, the proxy's value, and none of the
// hop-by-hop or forwarding headers: not when the agent sends the
// credential header several times, in other cases or with underscores for
// dashes (which CGI-style servers read as the same header), nor when the
// agent's Connection header names the credential, Host or framing headers.
func TestForwardHeaderHygiene(t *testing.T) {
	e := newEnv(t, `
domains:
  - domain: key.test
    alias: key
    ports: [443, {TLS}]
    allow_private: true
    tls_intercept: true
    credential: {header: X-Api-Key, env: TEST_KEY}
`)
	agentHeaders := [][2]string{
		{"X-Api-Key", "agent-1"},
		{"x-api-key", "agent-2"},
		{"X_Api_Key", "agent-3"},
		{"x_api-key", "agent-4"},
		{"X-API_KEY", "agent-5"},
		{"Connection", "X-Api-Key, Host, Content-Length, Transfer-Encoding, X-Drop"},
		{"X-Drop", "listed in Connection"},
		{"Proxy-Authorization", "Basic eDp5"},
		{"Proxy-Connection", "keep-alive"},
		{"Keep-Alive", "timeout=5"},
		{"Te", "gzip"},
		{"Upgrade", "h2c"},
		{"Trailer", "X-Api-Key"},
		{"Forwarded", "for=1.2.3.4"},
		{"X-Forwarded-For", "1.2.3.4"},
		{"X-Forwarded-Host", "evil.test"},
		{"X-Forwarded-Proto", "http"},
	}
	var head strings.Builder
	for _, h := range agentHeaders {
		head.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	for _, tc := range []struct{ name, target string }{
		{"alias", "http://key.devbox.local/h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: key.devbox.local\r\n%sContent-Length: 5\r\n\r\nhello", tc.target, head.String()) +
				fmt.Sprintf("GET %s HTTP/1.1\r\nHost: key.devbox.local\r\n%sConnection: close\r\n\r\n", tc.target, head.String())
			for i, resp := range rawExchange(t, e.addr, raw, 2) {
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 {
					t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
				}
				ec := decodeEcho(t, body)
				for k, vv := range ec.Header {
					norm := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
					if norm == "x-api-key" && (k != "X-Api-Key" || len(vv) != 1 || vv[0] != testSecret) {
						t.Errorf("request %d: upstream got %s: %q besides the credential", i, k, vv)
					}
					switch norm {
					case "x-drop", "proxy-authorization", "proxy-connection", "keep-alive", "te", "upgrade", "trailer",
						"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "connection":
						t.Errorf("request %d: upstream got hop-by-hop %s: %q", i, k, vv)
					}
				}
				if got := ec.Header.Values("X-Api-Key"); len(got) != 1 || got[0] != testSecret {
					t.Errorf("request %d: X-Api-Key upstream %q", i, got)
				}
				if ec.Host != "key.test" || (i == 0 && ec.Body != 5) {
					t.Errorf("request %d: echo %+v", i, ec)
				}
			}
		})
	}
}

// TestRewriteDropsCredentialLookalikes: the upgrade path (ReverseProxy)
// drops the agent's copies of the credential header in every spelling a
// server could read as it, as the forwarder does.
func TestRewriteDropsCredentialLookalikes(t *testing.T) {
	in := httptest.NewRequest("GET", "http://key.devbox.local/ws", nil)
	in.Header["X_api_key"] = []string{"agent-1"}
	in.Header["X-Api_key"] = []string{"agent-2"}
	in.Header["X-Api-Key"] = []string{"agent-3"}
	in.Header["X-Api-Keys"] = []string{"kept"}
	rs := &reqState{d: &dest{auth: authority{host: "key.test", port: 443}}, scheme: "https", credHeader: "X-Api-Key", cred: testSecret}
	in = in.WithContext(context.WithValue(in.Context(), keyReq, rs))
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	(&Proxy{}).rewrite(pr)
	want := http.Header{"X-Api-Key": {testSecret}, "X-Api-Keys": {"kept"}}
	if !reflect.DeepEqual(pr.Out.Header, want) {
		t.Fatalf("outbound header %v, want %v", pr.Out.Header, want)
	}
}

// startRawTLS is startRaw behind TLS with cert.
func startRawTLS(t *testing.T, cert tls.Certificate, serve func(c *rawConn)) *rawUpstream {
	t.Helper()
	return startRaw(t, func(c *rawConn) {
		tc := tls.Server(c.Conn, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err := tc.Handshake(); err != nil {
			return
		}
		rc := &rawConn{Conn: tc, n: c.n, u: c.u}
		rc.br = bufio.NewReader(rc)
		serve(rc)
	})
}

// TestForwardCredentialNotInErrors: an upstream that answers with garbage
// made of the request it got (the injected credential among it) cannot get
// the credential into the proxy's logs, events or answers through the
// parse error.
func TestForwardCredentialNotInErrors(t *testing.T) {
	var port int
	e := newEnv(t, credPolicy, func(cfg *Config) {
		var d net.Dialer
		cfg.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if network == "tcp" {
				addr = fmt.Sprintf("127.0.0.1:%d", port)
			}
			return d.DialContext(ctx, network, addr)
		}
	})
	for _, reply := range []func(auth string) string{
		func(auth string) string { return "HTTP/1.1 200 OK\r\nAuthorization " + auth + "\r\n\r\n" },
		func(auth string) string { return "HTTP/1.1 200 " + auth + "\x00\r\n\r\n" },
		func(auth string) string { return "HTTP/1.1 " + auth + "\r\n\r\n" },
		func(auth string) string { return auth + "\r\n\r\n" },
		func(auth string) string { return "HTTP/1.1 200 OK\r\nContent-Length: " + auth + "\r\n\r\n" },
		func(auth string) string {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Fields(auth)[1] + "\r\n"
		},
	} {
		u := startRawTLS(t, e.pki.server, func(c *rawConn) {
			req, _, err := c.readRequest()
			if err == nil {
				io.WriteString(c, reply(req.Header.Get("Authorization")))
			}
		})
		port = u.port
		resp, err := e.client().Get("http://api.devbox.local/v1/x")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), "CAGENTTEST") || strings.Contains(fmt.Sprint(resp.Header), "CAGENTTEST") {
				t.Errorf("credential in the answer: %v %s", resp.Header, body)
			}
		}
	}
	e.events.wait(t, 6)
	var events strings.Builder
	for _, ev := range e.events.all() {
		fmt.Fprintf(&events, "%+v\n", ev)
	}
	for name, out := range map[string]string{"logs": e.logs.String(), "events": events.String()} {
		if strings.Contains(out, "CAGENTTEST") {
			t.Errorf("credential value found in %s:\n%s", name, out)
		}
	}
}

func TestRedactCredential(t *testing.T) {
	cases := []struct{ format, secret, text string }{
		{"Bearer {value}", "sk-CAGENTTEST-1", `missing colon: "Authorization Bearer sk-CAGENTTEST-1"`},
		{"Bearer {value}", "sk-CAGENTTEST-1", `malformed HTTP status code "sk-CAGENTTEST-1"`},
		{"", "sk-CAGENTTEST-1", `bad Content-Length "sk-CAGENTTEST-1"`},
		{"token={value};v=1", "CAGENTTEST-abc", `"CAGENTTEST-abc;v=1"`},
		{"{value}:{value}", "CAGENTTEST-abc", `x "CAGENTTEST-abc:CAGENTTEST-abc" y`},
	}
	for _, tc := range cases {
		f := tc.format
		if f == "" {
			f = "{value}"
		}
		v := strings.ReplaceAll(f, "{value}", tc.secret)
		rs := &reqState{cred: v, secrets: secretParts(tc.format, v)}
		if got := rs.redact(tc.text); strings.Contains(got, "CAGENTTEST") {
			t.Errorf("format %q: %q redacted to %q", tc.format, tc.text, got)
		}
	}
	if got := (*reqState)(nil).redact("plain"); got != "plain" {
		t.Errorf("nil state: %q", got)
	}
}

// TestForwardPoolKeyIsolation: an upstream connection carries requests
// only for the entry and host it was opened for, even when entries and
// hosts share one server address: connection-bound state (NTLM-style
// authentication, a TLS server name) never crosses to another entry or name.
func TestForwardPoolKeyIsolation(t *testing.T) {
	type seen struct {
		conn int
		host string
		auth string
	}
	var mu sync.Mutex
	var log []seen
	u := startRaw(t, func(c *rawConn) {
		for {
			req, _, err := c.readRequest()
			if err != nil {
				return
			}
			mu.Lock()
			log = append(log, seen{c.n, req.Host, req.Header.Get("X-Conn-Auth")})
			mu.Unlock()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	e := newEnv(t, withPort(`
domains:
  - domain: a.test
    ports: [{RAW}]
    allow_private: true
  - domain: b.test
    ports: [{RAW}]
    allow_private: true
  - domain: "*.w.test"
    ports: [{RAW}]
    allow_private: true
`, u.port))
	c := e.client()
	hosts := []string{"a.test", "b.test", "x.w.test", "y.w.test", "a.test", "b.test", "x.w.test", "y.w.test"}
	for _, h := range hosts {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s:%d/", h, u.port), nil)
		req.Header.Set("X-Conn-Auth", h)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	hostOf := map[int]string{}
	for _, s := range log {
		h, _, _ := strings.Cut(s.host, ":")
		if prev, ok := hostOf[s.conn]; ok && prev != h {
			t.Fatalf("upstream connection %d carried requests for %s and %s: %+v", s.conn, prev, h, log)
		}
		hostOf[s.conn] = h
	}
	if len(log) != len(hosts) || len(hostOf) != 4 {
		t.Fatalf("want 4 connections (one per host, reused), got %+v", log)
	}
}

// TestForwardResponseFraming: a response framed ambiguously or wrongly
// reaches the client as exactly the body the proxy read, or as an error;
// never as a different, complete-looking body; and the connection is not
// reused after it unless its framing was clean.
func TestForwardResponseFraming(t *testing.T) {
	cases := []struct {
		name, resp string
		body       string // what the client may see when it sees a response
	}{
		{"cl and te", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"te and larger cl", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "hello"},
		{"length list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", "hello"},
		{"chunked identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n", ""},
		{"identity te", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", "hello"},
		{"gzip te", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", ""},
		{"chunk extension", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n", "hello"},
		{"chunk trailer smuggles length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 1\r\n\r\n", "hello"},
		{"connection names length", "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello", "hello"},
		{"http/1.0 keep-alive no length", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nhello", "hello"},
		{"obs-fold length", "HTTP/1.1 200 OK\r\nContent-Length:\r\n 5\r\n\r\nhello", "hello"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := startRaw(t, firstThenFresh(func(c *rawConn) bool {
				io.WriteString(c, tc.resp)
				return !strings.HasPrefix(tc.resp, "HTTP/1.0") // else a body until EOF
			}))
			e := newEnv(t, withPort(rawPolicy, u.port))
			c := e.client()
			url := fmt.Sprintf("http://raw.test:%d/", u.port)
			resp, err := c.Get(url)
			if err == nil {
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if rerr == nil && resp.StatusCode == 200 && string(body) != tc.body {
					t.Fatalf("client got a complete-looking body %q, want %q (or an error)", body, tc.body)
				}
				t.Logf("%d %q %v", resp.StatusCode, body, rerr)
			} else {
				t.Logf("error %v", err)
			}
			resp, body := e.get(url)
			if resp.StatusCode != 200 || string(body) != "fresh" {
				t.Fatalf("next request: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestForwardBudgetCoversEveryByteSent: retries, 408 resends, bodies the
// agent abandons and bodies the budget stops all charge at least what the
// upstream received, and the upstream never receives more than the budget.
func TestForwardBudgetCoversEveryByteSent(t *testing.T) {
	received := func(u *rawUpstream) int64 { n, _ := u.received(); return int64(n) }
	t.Run("retries", func(t *testing.T) {
		// The second request on each connection is read and dropped (a
		// retry), or answered 408 and closed (a resend).
		var conns atomic.Int32
		u := startRaw(t, func(c *rawConn) {
			n := conns.Add(1)
			if _, _, err := c.readRequest(); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if _, _, err := c.readRequest(); err != nil {
				return
			}
			if n%2 == 0 {
				io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			}
		})
		e := newEnv(t, withPort(rawPolicy+"    egress_limit: 1MiB\n", u.port))
		for i := 0; i < 6; i++ {
			e.get(fmt.Sprintf("http://raw.test:%d/%d", u.port, i))
		}
		e.events.wait(t, 6)
		if _, reqs := u.received(); len(reqs) <= 6 {
			t.Fatalf("no request was sent twice: %v", reqs)
		}
		if used, got := e.p.budget.Used("raw.test"), received(u); used < got || got == 0 {
			t.Fatalf("upstream received %d bytes, budget charged %d", got, used)
		}
	})
	t.Run("abandoned body", func(t *testing.T) {
		u := startRaw(t, serveKeepAlive("ok"))
		e := newEnv(t, withPort(rawPolicy+"    egress_limit: 1MiB\n", u.port))
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST http://raw.test:%d/up HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 200000\r\n\r\n%s", u.port, strings.Repeat("a", 100000))
		time.Sleep(100 * time.Millisecond)
		c.Close()
		e.events.wait(t, 1)
		time.Sleep(50 * time.Millisecond)
		if used, got := e.p.budget.Used("raw.test"), received(u); used < got || got == 0 {
			t.Fatalf("upstream received %d bytes, budget charged %d", got, used)
		}
	})
	t.Run("budget stops the body", func(t *testing.T) {
		u := startRaw(t, serveKeepAlive("ok"))
		e := newEnv(t, withPort(rawPolicy+"    egress_limit: 10KiB\n", u.port))
		for _, framing := range []string{"Content-Length: 100000", "Transfer-Encoding: chunked"} {
			body := strings.Repeat("b", 100000)
			if strings.HasPrefix(framing, "Transfer") {
				body = fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
			}
			rs := rawExchange(t, e.addr, fmt.Sprintf("POST http://raw.test:%d/up HTTP/1.1\r\nHost: raw.test\r\n%s\r\nConnection: close\r\n\r\n%s", u.port, framing, body), 1)
			if rs[0].StatusCode != 429 {
				t.Fatalf("%s: status %d", framing, rs[0].StatusCode)
			}
		}
		time.Sleep(50 * time.Millisecond)
		if used, got := e.p.budget.Used("raw.test"), received(u); got > 10<<10 || used > 10<<10 || used < got {
			t.Fatalf("upstream received %d bytes, budget charged %d, limit %d", got, used, 10<<10)
		}
	})
}

// TestForwardStuckUpstreamReleased: an upstream that stops reading the
// request body (and neither answers nor closes) does not hold the
// handler, its goroutine and two sockets past the entry's timeout once the
// agent has gone; nothing is left behind.
func TestForwardStuckUpstreamReleased(t *testing.T) {
	hold := make(chan struct{})
	u := startRaw(t, func(c *rawConn) {
		if _, err := http.ReadRequest(c.br); err != nil {
			return
		}
		select { // read the head, never the body
		case <-hold:
		case <-time.After(8 * time.Second):
		}
	})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	e := newEnv(t, withPort(rawPolicy+"    timeout: 1s\n", u.port))
	ignore := goleak.IgnoreCurrent()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	fmt.Fprintf(c, "POST http://raw.test:%d/up HTTP/1.1\r\nHost: raw.test\r\nContent-Length: %d\r\n\r\n", u.port, size)
	c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	c.Write(make([]byte, size)) // blocks once the socket buffers are full
	c.Close()
	start := time.Now()
	ev := e.events.wait(t, 1)[0]
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("the request was held %v after the agent left", d)
	}
	if ev.Status == 200 {
		t.Fatalf("event %+v", ev)
	}
	e.p.state().pool.closeAll()
	release() // the test's own upstream goroutine
	// The server lingers 500 ms before closing an abandoned connection.
	deadline := time.Now().Add(3 * time.Second)
	for goleak.Find(ignore) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	goleak.VerifyNone(t, ignore)
}

// TestForwardSlowUpstreams: an upstream that dribbles its header gets a
// 504 after the entry's timeout (the clock does not restart per byte or
// per 1xx); one that stalls in the middle of a body is cut off as soon as
// the agent leaves. Nothing is left behind either way.
func TestForwardSlowUpstreams(t *testing.T) {
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	u := startRaw(t, func(c *rawConn) {
		req, _, err := c.readRequest()
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/dribble":
			msg := "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\nHTTP/1.1 200 OK\r\nX-Slow: " + strings.Repeat("s", 1000)
			for i := 0; i < len(msg); i++ {
				if _, err := c.Write([]byte{msg[i]}); err != nil {
					return
				}
				select {
				case <-hold:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		case "/stall":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n") // streamed
			<-hold
		}
	})
	e := newEnv(t, withPort(rawPolicy+"    timeout: 1s\n", u.port))
	ignore := goleak.IgnoreCurrent()
	tr := &http.Transport{Proxy: e.client().Transport.(*http.Transport).Proxy}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	start := time.Now()
	resp, err := client.Get(fmt.Sprintf("http://raw.test:%d/dribble", u.port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 504 || time.Since(start) > 3*time.Second {
		t.Fatalf("dribbled header: %d after %v: %s", resp.StatusCode, time.Since(start), body)
	}

	resp2, err := client.Get(fmt.Sprintf("http://raw.test:%d/stall", u.port))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp2.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("stall: %q %v", buf, err)
	}
	resp2.Body.Close() // the agent gives up mid-body
	tr.CloseIdleConnections()
	start = time.Now()
	e.events.wait(t, 2)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the stalled response was held %v after the agent left", d)
	}
	e.p.state().pool.closeAll()
	release()
	deadline := time.Now().Add(3 * time.Second)
	for goleak.Find(ignore) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	goleak.VerifyNone(t, ignore)
}
