package proxy

import (
	"bufio"
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
