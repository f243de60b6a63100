package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
)

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

const basicPolicy = `
domains:
  - domain: echo.test
    ports: [{PLAIN}, {TLS}]
    allow_private: true
  - domain: api.test
    alias: api
    ports: [{PLAIN}, {TLS}]
    allow_private: true
    tls_intercept: true
    credential: {header: Authorization, format: "Bearer {value}", env: TEST_KEY}
  - domain: paths.test
    ports: [{PLAIN}, {TLS}]
    allow_private: true
    tls_intercept: true
    allowed_paths: ["/v1/*"]
    denied_paths: ["/v1/files*"]
  - domain: ro.test
    ports: [{PLAIN}, {TLS}]
    allow_private: true
    read_only: true
  - domain: private.test
    ports: [{PLAIN}, {TLS}]
`

func TestPlainHTTPForwarded(t *testing.T) {
	e := newEnv(t, basicPolicy)
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://echo.test:%d/a/b?x=1", e.echo.plainPort), nil)
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("X-Forwarded-For", "10.0.0.1") // the agent's own claim is dropped too
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "hop-by-hop")
	resp, body := e.do(req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	ec := decodeEcho(t, body)
	if ec.Path != "/a/b" || ec.Query != "x=1" || ec.Host != fmt.Sprintf("echo.test:%d", e.echo.plainPort) {
		t.Fatalf("echo %+v", ec)
	}
	for _, h := range []string{"Proxy-Authorization", "X-Forwarded-For", "Via", "Forwarded", "Proxy-Connection", "X-Hop"} {
		if v := ec.Header.Get(h); v != "" {
			t.Errorf("upstream received %s: %q", h, v)
		}
	}
	if ec.Header.Get("X-Custom") != "kept" {
		t.Error("end-to-end header dropped")
	}
	evs := e.events.wait(t, 1)
	ev := evs[0]
	if ev.Type != audit.TypeHTTP || ev.Decision != audit.Allow || ev.Status != 200 || ev.Host != "echo.test" || ev.Path != "/a/b" || ev.BytesUp <= 0 || ev.BytesDown <= 0 || ev.Agent != "test-agent" || ev.Upstream == "" {
		t.Fatalf("event %+v", ev)
	}
}

func TestHTTPSTunnel(t *testing.T) {
	e := newEnv(t, basicPolicy)
	resp, body := e.get(fmt.Sprintf("https://echo.test:%d/tunnelled", e.echo.tlsPort))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	ec := decodeEcho(t, body)
	if !ec.TLS || ec.Path != "/tunnelled" {
		t.Fatalf("echo %+v", ec)
	}
	e.client().Transport.(*http.Transport).CloseIdleConnections()
}

func TestDenials(t *testing.T) {
	e := newEnv(t, basicPolicy)
	cases := []struct {
		name, method, url string
		status            int
		code              string
	}{
		{"not listed", "GET", "http://other.test:{PLAIN}/", 403, codeDestination},
		{"port not listed", "GET", "http://echo.test:1/", 403, codeDestination},
		{"read only", "POST", "http://ro.test:{PLAIN}/", 403, codeMethod},
		{"read only get", "GET", "http://ro.test:{PLAIN}/", 200, ""},
		{"path allowed", "GET", "http://paths.test:{PLAIN}/v1/models", 200, ""},
		{"path not allowed", "GET", "http://paths.test:{PLAIN}/v2/models", 403, codePath},
		{"path denied", "GET", "http://paths.test:{PLAIN}/v1/files/1", 403, codePath},
		{"path dot segments", "GET", "http://paths.test:{PLAIN}/v1/../admin", 403, codePath},
		{"path encoded slash", "GET", "http://paths.test:{PLAIN}/v1/x%2f..%2f..%2fadmin", 403, codePath},
		{"path double encoded", "GET", "http://paths.test:{PLAIN}/v1/x%252f", 403, codePath},
		{"path dot encoded", "GET", "http://paths.test:{PLAIN}/v1/%2e%2e/admin", 403, codePath},
		{"path double slash", "GET", "http://paths.test:{PLAIN}/v1//files/1", 403, codePath},
		{"path case", "GET", "http://paths.test:{PLAIN}/v1/FILES/1", 403, codePath},
		{"path NUL", "GET", "http://paths.test:{PLAIN}/v1/a%00", 403, codePath},
		{"loopback without allow_private", "GET", "http://private.test:{PLAIN}/", 403, codeForbidden},
		{"IP literal", "GET", "http://127.0.0.1:{PLAIN}/", 403, codeDestination},
		{"metadata IP", "GET", "http://169.254.169.254/latest/meta-data/", 403, codeForbidden},
		{"nxdomain listed", "GET", "http://echo.test:{PLAIN}/", 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := strings.ReplaceAll(c.url, "{PLAIN}", fmt.Sprint(e.echo.plainPort))
			req, _ := http.NewRequest(c.method, u, nil)
			// Keep the escapes as written.
			if i := strings.Index(u, "/v1/"); i >= 0 {
				req.URL.RawPath = u[i:]
				req.URL.Path = u[i:]
				req.URL.Opaque = "//" + req.URL.Host + u[i:]
			}
			resp, body := e.do(req)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			if c.code != "" {
				d := decodeDenial(t, resp, body)
				if d.Error != c.code || d.Reason == "" {
					t.Fatalf("denial %+v, want %s", d, c.code)
				}
			}
		})
	}
}

func TestConnectDenialsBeforeTunnel(t *testing.T) {
	e := newEnv(t, basicPolicy)
	cases := []struct {
		target string
		status int
		code   string
	}{
		{"other.test:443", 403, codeDestination},
		{fmt.Sprintf("127.0.0.1:%d", e.echo.tlsPort), 403, codeDestination},
		{"169.254.169.254:443", 403, codeForbidden},
		{fmt.Sprintf("private.test:%d", e.echo.tlsPort), 403, codeForbidden},
		{fmt.Sprintf("ro.test:%d", e.echo.tlsPort), 403, codeMethod},
		{"api.devbox.local:443", 403, codeDestination},
		{"echo.test", 400, codeBadRequest},
		{"echo.test:0", 400, codeBadRequest},
		{"user@echo.test:443", 400, codeBadRequest},
		{"[::1%25lo]:443", 400, codeBadRequest},
		{"2130706433:443", 400, codeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.target, func(t *testing.T) {
			conn, resp := e.rawConnect(c.target)
			defer conn.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			body, _ := io.ReadAll(resp.Body)
			if strings.Contains(c.target, "@") {
				return // net/http refuses the Host header itself
			}
			if d := decodeDenial(t, resp, body); d.Error != c.code {
				t.Fatalf("denial %+v, want %s", d, c.code)
			}
		})
	}
	for _, ev := range e.events.all() {
		if ev.Type != audit.TypeConnect || ev.Decision != audit.Deny || ev.Status == 200 {
			t.Errorf("event %+v", ev)
		}
	}
}

func TestDomainFronting(t *testing.T) {
	e := newEnv(t, basicPolicy)
	conn, resp := e.rawConnect(fmt.Sprintf("echo.test:%d", e.echo.tlsPort))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: "other.test", RootCAs: e.pki.pool})
	if err := tc.Handshake(); err == nil {
		t.Fatal("handshake with a fronted SNI succeeded")
	}
	evs := e.events.wait(t, 1)
	if ev := evs[0]; ev.Decision != audit.Deny || ev.Error != codeDestination || !strings.Contains(ev.Reason, "other.test") {
		t.Fatalf("event %+v", ev)
	}
	if len(e.dials.all()) != 1 {
		// The upstream was dialed before the 200; nothing was relayed to it.
		t.Logf("dials: %v", e.dials.all())
	}
}

func TestDenialEventsKeepEscapedPath(t *testing.T) {
	e := newEnv(t, basicPolicy)
	u := fmt.Sprintf("http://paths.test:%d/v1/x%%2fadmin", e.echo.plainPort)
	req, _ := http.NewRequest("GET", u, nil)
	resp, _ := e.do(req)
	if resp.StatusCode != 403 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ev := e.events.wait(t, 1)[0]
	if ev.Path != "/v1/x%2fadmin" || ev.Error != codePath {
		t.Fatalf("event %+v", ev)
	}
}

func TestInterceptedRulesApply(t *testing.T) {
	e := newEnv(t, basicPolicy+`  - domain: paths2.test
    ports: [{TLS}]
    allow_private: true
    allowed_paths: ["/v1/*"]
`)
	for path, want := range map[string]int{"/v1/models": 200, "/v2/models": 403, "/v1/files/x": 403, "/v1/%2e%2e/v2": 403} {
		req, _ := http.NewRequest("GET", fmt.Sprintf("https://paths.test:%d%s", e.echo.tlsPort, path), nil)
		req.URL.RawPath = path
		resp, body := e.do(req)
		if resp.StatusCode != want {
			t.Errorf("https %s: %d, want %d: %s", path, resp.StatusCode, want, body)
		}
	}
	// Path rules without tls_intercept: no tunnel at all.
	_, resp := e.rawConnect(fmt.Sprintf("paths2.test:%d", e.echo.tlsPort))
	if resp.StatusCode != 403 || resp.Header.Get("X-Cagent-Deny-Reason") != codePath {
		t.Fatalf("CONNECT to a path-ruled entry without interception: %d", resp.StatusCode)
	}
}

func TestTunnelMustStartWithTLSOn443(t *testing.T) {
	e := newEnv(t, "domains:\n  - domain: echo.test\n    allow_private: true\n")
	for name, first := range map[string]string{
		"plain http":    "GET / HTTP/1.1\r\nHost: echo.test\r\n\r\n",
		"bogus hello":   "\x16\x03\x01\x00\x05hello",
		"truncated tls": "\x16\x03",
	} {
		t.Run(name, func(t *testing.T) {
			c, resp := e.rawConnect("echo.test:443")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			io.WriteString(c, first)
			if name == "truncated tls" {
				c.(*net.TCPConn).CloseWrite()
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 512)); err == nil {
				t.Fatalf("upstream answered %d bytes", n)
			}
		})
	}
	for _, ev := range e.events.wait(t, 3) {
		if ev.Decision != audit.Deny && ev.Error != "client_closed" {
			t.Errorf("event %+v", ev)
		}
	}
}
