package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// anyUpgradeServer answers every Upgrade request with 101 and then echoes
// bytes: the worst case of an upstream that honours whatever it is offered
// (h2c, a raw "HTTP/1.1" switch, WebSocket).
func anyUpgradeServer(t *testing.T) int {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := r.Header.Get("Upgrade")
		if up == "" {
			fmt.Fprintf(w, "plain %s %s\n", r.Method, r.URL.Path)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", up)
		io.Copy(c, brw)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().(*net.TCPAddr).Port
}

// TestUpgradeCannotVoidRules: an upgraded connection is an opaque channel
// on which the agent can send anything (h2c carries whole HTTP/2 requests
// for any path and method, one rate-limit token for all of them). So h2c
// is refused everywhere, entries with path rules allow only WebSocket, and
// read-only entries allow no upgrade at all.
func TestUpgradeCannotVoidRules(t *testing.T) {
	port := anyUpgradeServer(t)
	e := newEnv(t, withPort(`
domains:
  - domain: open.test
    ports: [{RAW}]
    allow_private: true
  - domain: paths.test
    ports: [{RAW}]
    allow_private: true
    allowed_paths: ["/ws/*"]
  - domain: ro.test
    ports: [{RAW}]
    allow_private: true
    read_only: true
`, port))
	cases := []struct {
		host, path, upgrade string
		want                int
	}{
		{"open.test", "/", "websocket", 101},
		{"open.test", "/", "echo", 101},
		{"open.test", "/", "h2c", 403},
		{"open.test", "/", "H2C", 403},
		{"open.test", "/", "websocket, h2c", 403},
		{"paths.test", "/ws/x", "websocket", 101},
		{"paths.test", "/ws/x", "WebSocket", 101},
		{"paths.test", "/ws/x", "h2c", 403},
		{"paths.test", "/ws/x", "HTTP/1.1", 403},
		{"paths.test", "/ws/x", "echo", 403},
		{"paths.test", "/ws/x", "websocket, echo", 403},
		{"paths.test", "/other", "websocket", 403},
		{"ro.test", "/", "websocket", 403},
		{"ro.test", "/", "echo", 403},
	}
	for _, tc := range cases {
		t.Run(tc.host+tc.path+" "+tc.upgrade, func(t *testing.T) {
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET http://%s:%d%s HTTP/1.1\r\nHost: %s:%d\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: %s\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n", tc.host, port, tc.path, tc.host, port, tc.upgrade)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == 101 {
				return
			}
			if got := resp.Header.Get("X-Cagent-Deny-Reason"); got == "" {
				t.Fatalf("refusal without a reason header")
			}
		})
	}
	// An Upgrade header the Connection header does not name is hop-by-hop
	// noise: dropped, and the request goes through as a plain one.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET http://paths.test:%d/ws/x HTTP/1.1\r\nHost: paths.test:%d\r\nUpgrade: h2c\r\n\r\n", port, port)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "plain GET") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// TestProxyLookupsHeldToDNSTunnelingLimits: the proxy resolves names itself,
// so without these checks an agent could exfiltrate through DNS by asking
// the proxy for <data>.allowed-wildcard, past the DNS filter's heuristics.
// Names matched through a wildcard get the same label, name, entropy and
// distinct-names limits; nothing is resolved for a refused name.
func TestProxyLookupsHeldToDNSTunnelingLimits(t *testing.T) {
	raw := tcpEcho(t)
	e := newEnv(t, withPort(`
dns:
  tunneling: {max_label_length: 20, max_name_length: 60, distinct_names_per_hour: 3}
domains:
  - domain: "*.exfil.test"
    ports: [80, {RAW}]
    allow_private: true
  - domain: a-very-long-but-exactly-listed-name-of-some-service.test
    allow_private: true
`, raw))
	get := func(host string) *http.Response {
		resp, _ := e.get("http://" + host + "/")
		return resp
	}
	for _, tc := range []struct{ name, host string }{
		{"long label", strings.Repeat("a", 21) + ".exfil.test"},
		{"long name", strings.Repeat("abcdefghij.", 5) + "exfil.test"},
		{"random label", "q8zk3v1xw7mf0j2pa5ny.exfil.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(tc.host)
			if resp.StatusCode != 403 || resp.Header.Get("X-Cagent-Deny-Reason") != "dns_tunneling_suspected" {
				t.Fatalf("%s: %d %q", tc.host, resp.StatusCode, resp.Header.Get("X-Cagent-Deny-Reason"))
			}
			if n := e.dns.count(tc.host); n != 0 {
				t.Fatalf("%s was resolved %d times", tc.host, n)
			}
			c, r := e.rawConnect(fmt.Sprintf("%s:%d", tc.host, raw))
			c.Close()
			if r.StatusCode != 403 || e.dns.count(tc.host) != 0 {
				t.Fatalf("CONNECT %s: %d, resolved %d", tc.host, r.StatusCode, e.dns.count(tc.host))
			}
		})
	}
	// An exactly listed name is the operator's choice, not agent data.
	if resp := get("a-very-long-but-exactly-listed-name-of-some-service.test"); resp.StatusCode != 200 {
		t.Fatalf("exact entry: %d", resp.StatusCode)
	}
	// Distinct names per hour under one wildcard entry, any case, HTTP and
	// CONNECT alike; a name already used keeps working.
	for _, h := range []string{"one.exfil.test", "TWO.exfil.test", "two.EXFIL.test."} {
		if resp := get(h); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", h, resp.StatusCode)
		}
	}
	c, r := e.rawConnect(fmt.Sprintf("three.exfil.test:%d", raw))
	c.Close()
	if r.StatusCode != 200 {
		t.Fatalf("CONNECT three: %d", r.StatusCode)
	}
	if resp := get("four.exfil.test"); resp.StatusCode != 403 || resp.Header.Get("X-Cagent-Deny-Reason") != "dns_tunneling_suspected" || e.dns.count("four.exfil.test") != 0 {
		t.Fatalf("fourth distinct name: %d", resp.StatusCode)
	}
	if resp := get("One.exfil.test"); resp.StatusCode != 200 {
		t.Fatalf("a name already asked for: %d", resp.StatusCode)
	}
}

// TestInterceptedUpgradeChecked: inside an intercepted tunnel, an upgrade
// request passes the path rules like any request, h2c is refused, and the
// bytes sent after a WebSocket upgrade are charged to the budget.
func TestInterceptedUpgradeChecked(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", r.Header.Get("Upgrade"))
		io.Copy(c, brw)
	}))
	e := newEnv(t, "domains: []\n")
	s.TLS = &tls.Config{Certificates: []tls.Certificate{e.pki.server}}
	s.StartTLS()
	t.Cleanup(s.Close)
	port := s.Listener.Addr().(*net.TCPAddr).Port
	e.p.SetPolicy(e.policy(withPort(`
domains:
  - domain: wss.test
    ports: [{RAW}]
    allow_private: true
    tls_intercept: true
    allowed_paths: ["/ws/*"]
    egress_limit: 16KiB
`, port)))
	pool := e.pki.pool.Clone()
	pool.AppendCertsFromPEM(e.p.CACertPEM())
	try := func(path, upgrade string) (*http.Response, *bufio.Reader, net.Conn) {
		c, resp := e.rawConnect(fmt.Sprintf("wss.test:%d", port))
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		tc := tls.Client(c, &tls.Config{ServerName: "wss.test", RootCAs: pool})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: wss.test:%d\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", path, port, upgrade)
		br := bufio.NewReader(tc)
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r, br, tc
	}
	for _, tc := range []struct {
		path, upgrade string
		want          int
	}{
		{"/other", "websocket", 403},
		{"/ws/%2e%2e/other", "websocket", 403},
		{"/ws/x", "h2c", 403},
		{"/ws/x", "websocket", 101},
	} {
		r, br, c := try(tc.path, tc.upgrade)
		if r.StatusCode != tc.want {
			t.Fatalf("%s %s: %d, want %d", tc.path, tc.upgrade, r.StatusCode, tc.want)
		}
		if tc.want != 101 {
			continue
		}
		chunk := strings.Repeat("f", 4<<10)
		got := 0
		for i := 0; i < 8; i++ {
			if _, err := io.WriteString(c, chunk); err != nil {
				break
			}
			n, err := io.ReadFull(br, make([]byte, len(chunk)))
			got += n
			if err != nil {
				break
			}
		}
		if got >= 16<<10 {
			t.Fatalf("%d bytes through a WebSocket with a 16KiB budget", got)
		}
	}
}
