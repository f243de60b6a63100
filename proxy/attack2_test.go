package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// rawExchange writes raw to addr (possibly several pipelined requests) and
// reads n responses.
func rawExchange(t *testing.T, addr, raw string, n int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	var out []*http.Response
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if resp.StatusCode == http.StatusContinue {
			i-- // an interim response; the final one follows
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		out = append(out, resp)
	}
	return out
}

// TestRequestTargetTricks: the destination is decided from the request
// target the proxy routes by, and the upstream gets exactly that host, on
// both listeners, for every request of a keep-alive connection.
func TestRequestTargetTricks(t *testing.T) {
	e := newEnv(t, basicPolicy)
	transparent := listen(t, e.p.ServeTransparentHTTP)
	P := e.echo.plainPort
	type want struct {
		status int
		host   string // echo's Host, when 200
		code   string // deny code otherwise
	}
	cases := []struct {
		name, addr, raw string
		want            []want
	}{
		{"explicit: absolute URL wins over Host", e.addr,
			fmt.Sprintf("GET http://echo.test:%d/a HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n", P),
			[]want{{200, fmt.Sprintf("echo.test:%d", P), ""}}},
		{"explicit: disallowed URL, allowed Host", e.addr,
			fmt.Sprintf("GET http://other.test/ HTTP/1.1\r\nHost: echo.test:%d\r\nConnection: close\r\n\r\n", P),
			[]want{{403, "", codeDestination}}},
		{"explicit: userinfo in URL", e.addr,
			fmt.Sprintf("GET http://echo.test:%d@other.test/ HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n", P),
			[]want{{403, "", codeDestination}}},
		{"explicit: pipelined origin-form after an allowed request", e.addr,
			fmt.Sprintf("GET http://echo.test:%d/a HTTP/1.1\r\nHost: echo.test:%d\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n", P, P),
			[]want{{200, fmt.Sprintf("echo.test:%d", P), ""}, {400, "", codeBadRequest}}},
		{"explicit: pipelined other host", e.addr,
			fmt.Sprintf("GET http://echo.test:%d/a HTTP/1.1\r\nHost: echo.test:%d\r\n\r\nGET http://other.test/ HTTP/1.1\r\nHost: echo.test:%d\r\nConnection: close\r\n\r\n", P, P, P),
			[]want{{200, fmt.Sprintf("echo.test:%d", P), ""}, {403, "", codeDestination}}},
		{"transparent: HTTP/1.0 without Host", transparent,
			"GET / HTTP/1.0\r\n\r\n",
			[]want{{403, "", codeDestination}}},
		{"transparent: absolute URL to another host", transparent,
			fmt.Sprintf("GET http://other.test/ HTTP/1.1\r\nHost: echo.test:%d\r\nConnection: close\r\n\r\n", P),
			[]want{{403, "", codeDestination}}},
		{"transparent: pipelined other host", transparent,
			fmt.Sprintf("GET /a HTTP/1.1\r\nHost: echo.test:%d\r\n\r\nGET /b HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n", P),
			[]want{{200, fmt.Sprintf("echo.test:%d", P), ""}, {403, "", codeDestination}}},
		{"transparent: uppercase and trailing dot", transparent,
			fmt.Sprintf("GET / HTTP/1.1\r\nHost: ECHO.Test.:%d\r\nConnection: close\r\n\r\n", P),
			[]want{{200, fmt.Sprintf("echo.test:%d", P), ""}}},
		// net/http refuses these Host headers itself (400).
		{"transparent: userinfo in Host", transparent,
			fmt.Sprintf("GET / HTTP/1.1\r\nHost: other.test@echo.test:%d\r\nConnection: close\r\n\r\n", P),
			[]want{{400, "", ""}}},
		{"transparent: two Host headers", transparent,
			fmt.Sprintf("GET / HTTP/1.1\r\nHost: echo.test:%d\r\nHost: other.test\r\nConnection: close\r\n\r\n", P),
			[]want{{400, "", ""}}},
		{"transparent: homoglyph (raw UTF-8) host", transparent,
			fmt.Sprintf("GET / HTTP/1.1\r\nHost: ech\u043e.test:%d\r\nConnection: close\r\n\r\n", P),
			[]want{{400, "", ""}}},
		{"transparent: punycode homoglyph is just another name", transparent,
			"GET / HTTP/1.1\r\nHost: xn--ech-5cd.test\r\nConnection: close\r\n\r\n",
			[]want{{403, "", codeDestination}}},
		{"transparent: CONNECT", transparent,
			fmt.Sprintf("CONNECT echo.test:%d HTTP/1.1\r\nHost: echo.test:%d\r\n\r\n", P, P),
			[]want{{400, "", codeBadRequest}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resps := rawExchange(t, tc.addr, tc.raw, len(tc.want))
			for i, w := range tc.want {
				r := resps[i]
				body, _ := io.ReadAll(r.Body)
				if r.StatusCode != w.status {
					t.Fatalf("response %d: status %d, want %d: %s", i, r.StatusCode, w.status, body)
				}
				if w.host != "" {
					if got := decodeEcho(t, body).Host; got != w.host {
						t.Fatalf("response %d: upstream saw Host %q, want %q", i, got, w.host)
					}
				}
				if w.code != "" {
					if got := r.Header.Get("X-Cagent-Deny-Reason"); got != w.code {
						t.Fatalf("response %d: code %q, want %q", i, got, w.code)
					}
				}
			}
		})
	}
	if n := e.dns.count("other.test"); n != 0 {
		t.Fatalf("other.test was resolved %d times", n)
	}
}

// TestRedirectNotFollowed: the proxy hands redirects to the client; it never
// follows one itself (so never to another host, and never with a credential).
func TestRedirectNotFollowed(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://other.test/steal", http.StatusFound)
	}))
	t.Cleanup(s.Close)
	port := s.Listener.Addr().(*net.TCPAddr).Port
	e := newEnv(t, withPort("domains:\n  - domain: redir.test\n    ports: [{RAW}]\n    allow_private: true\n", port))
	resps := rawExchange(t, e.addr, fmt.Sprintf("GET http://redir.test:%d/ HTTP/1.1\r\nHost: redir.test\r\nConnection: close\r\n\r\n", port), 1)
	if resps[0].StatusCode != 302 || resps[0].Header.Get("Location") != "http://other.test/steal" {
		t.Fatalf("%d %v", resps[0].StatusCode, resps[0].Header)
	}
	if e.dns.count("other.test") != 0 {
		t.Fatal("the proxy followed the redirect")
	}
}

// TestRequestTrailersNotForwarded: trailers are not counted in the egress
// budget, so they must not reach the upstream (nor can a trailer named like
// the credential header stand in for it).
func TestRequestTrailersNotForwarded(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		json.NewEncoder(w).Encode(r.Trailer)
	}))
	t.Cleanup(s.Close)
	port := s.Listener.Addr().(*net.TCPAddr).Port
	e := newEnv(t, withPort("domains:\n  - domain: tr.test\n    ports: [{RAW}]\n    allow_private: true\n", port))
	big := strings.Repeat("x", 4000)
	raw := fmt.Sprintf("POST http://tr.test:%d/ HTTP/1.1\r\nHost: tr.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Data, Authorization\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Data: %s\r\nAuthorization: Bearer agent\r\n\r\n", port, big)
	resps := rawExchange(t, e.addr, raw, 1)
	body, _ := io.ReadAll(resps[0].Body)
	if resps[0].StatusCode != 200 {
		t.Fatalf("%d %s", resps[0].StatusCode, body)
	}
	if strings.Contains(string(body), "xxxx") || strings.Contains(string(body), "agent") {
		t.Fatalf("trailers reached the upstream: %s", body)
	}
}

// TestCredentialHeaderTricks: whatever case or number of copies the agent
// sends of the credential header, the upstream gets exactly the injected
// value; and TRACE (which servers answer by reflecting the request headers)
// is refused on credentialed entries, through the alias and intercepted.
func TestCredentialHeaderTricks(t *testing.T) {
	e := newEnv(t, credPolicy)
	u := fmt.Sprintf("https://api.test:%d/v1/models", e.echo.tlsPort)
	req, _ := http.NewRequest("GET", u, nil)
	req.Header["authorization"] = []string{"Bearer lower"}
	req.Header["AUTHORIZATION"] = []string{"Bearer upper", "Bearer upper2"}
	req.Header["Authorization"] = []string{"Bearer canon"}
	resp, body := e.do(req)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := decodeEcho(t, body).Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+testSecret {
		t.Fatalf("upstream Authorization %q", got)
	}
	for _, rawurl := range []string{u, "http://api.devbox.local/v1/models"} {
		for _, m := range []string{"TRACE", "TRACK"} {
			req, _ := http.NewRequest(m, rawurl, nil)
			resp, body := e.do(req)
			if resp.StatusCode != 403 || strings.Contains(string(body), testSecret) {
				t.Fatalf("%s %s: %d %s", m, rawurl, resp.StatusCode, body)
			}
			if d := decodeDenial(t, resp, body); d.Error != codeMethod {
				t.Fatalf("%s: %+v", m, d)
			}
		}
	}
	// Entries without a credential are not affected.
	req, _ = http.NewRequest("TRACE", fmt.Sprintf("https://other.test:%d/", e.echo.tlsPort), nil)
	if resp, body := e.do(req); resp.StatusCode != 200 {
		t.Fatalf("TRACE other: %d %s", resp.StatusCode, body)
	}
}

// TestReadOnlyMethodOverride: frameworks that honour method-override headers
// would turn a GET into a DELETE behind the proxy's back; on read-only
// entries such headers are refused.
func TestReadOnlyMethodOverride(t *testing.T) {
	e := newEnv(t, basicPolicy)
	for _, h := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x-http-method-override"} {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://ro.test:%d/x", e.echo.plainPort), nil)
		req.Header.Set(h, "DELETE")
		resp, body := e.do(req)
		if resp.StatusCode != 403 || decodeDenial(t, resp, body).Error != codeMethod {
			t.Fatalf("%s: %d %s", h, resp.StatusCode, body)
		}
	}
	// A harmless override value and other entries are unaffected.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://ro.test:%d/x", e.echo.plainPort), nil)
	req.Header.Set("X-HTTP-Method-Override", "HEAD")
	if resp, body := e.do(req); resp.StatusCode != 200 {
		t.Fatalf("HEAD override: %d %s", resp.StatusCode, body)
	}
	req, _ = http.NewRequest("GET", fmt.Sprintf("http://echo.test:%d/x", e.echo.plainPort), nil)
	req.Header.Set("X-HTTP-Method-Override", "DELETE")
	if resp, body := e.do(req); resp.StatusCode != 200 {
		t.Fatalf("other entry: %d %s", resp.StatusCode, body)
	}
}

// TestBudgetExpectContinueAndChunked: a body announced with Expect:
// 100-continue, or sent in many small chunks, is charged as it is read and
// stopped at the budget like any other.
func TestBudgetExpectContinueAndChunked(t *testing.T) {
	e := newEnv(t, `
domains:
  - domain: echo.test
    ports: [{PLAIN}]
    allow_private: true
    egress_limit: 8KiB
`)
	P := e.echo.plainPort
	body := strings.Repeat("e", 32<<10)
	resps := rawExchange(t, e.addr, fmt.Sprintf("POST http://echo.test:%d/ HTTP/1.1\r\nHost: echo.test\r\nExpect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", P, len(body), body), 1)
	if resps[0].StatusCode != 429 {
		t.Fatalf("Expect: 100-continue: %d", resps[0].StatusCode)
	}
	if used := e.p.budget.Used("echo.test"); used > 8<<10 {
		t.Fatalf("budget used %d > 8KiB", used)
	}
	var chunked strings.Builder
	for i := 0; i < 4000; i++ {
		chunked.WriteString("4\r\nabcd\r\n")
	}
	chunked.WriteString("0\r\n\r\n")
	resps = rawExchange(t, e.addr, fmt.Sprintf("POST http://echo.test:%d/ HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n%s", P, chunked.String()), 1)
	if resps[0].StatusCode != 429 {
		t.Fatalf("chunked: %d", resps[0].StatusCode)
	}
	if used := e.p.budget.Used("echo.test"); used > 8<<10 {
		t.Fatalf("budget used %d > 8KiB", used)
	}
}
