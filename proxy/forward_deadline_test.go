package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestForwardDeadlinesOnReusedConnection: the response header's read
// deadline is left set when the body came in with the header, and cleared
// only before the connection is next read. A reused connection must still
// pass the idle check after that deadline expired while it was idle, a body
// that comes later than the timeout must still be read whole, and the next
// request on the connection (with or without a body) must get its own
// header timeout.
func TestForwardDeadlinesOnReusedConnection(t *testing.T) {
	u := startRaw(t, func(c *rawConn) {
		for {
			req, _, err := c.readRequest()
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/fast":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			case "/slowbody":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
				time.Sleep(800 * time.Millisecond)
				io.WriteString(c, "body")
			case "/silent":
				io.Copy(io.Discard, c) // until the proxy gives up
				return
			}
		}
	})
	e := newEnv(t, withPort(rawPolicy+"    timeout: 500ms\n", u.port))
	client := e.client()
	client.Timeout = 5 * time.Second
	base := fmt.Sprintf("http://raw.test:%d", u.port)
	do := func(method, path string, wantStatus int, wantBody string) time.Duration {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("payload")
		}
		req, _ := http.NewRequest(method, base+path, body)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != wantStatus || (wantBody != "" && string(b) != wantBody) {
			t.Fatalf("%s %s: %d %q %v, want %d %q", method, path, resp.StatusCode, b, err, wantStatus, wantBody)
		}
		return time.Since(start)
	}
	do("GET", "/fast", 200, "ok")
	time.Sleep(700 * time.Millisecond) // the header's deadline expires while the connection is idle
	do("GET", "/slowbody", 200, "body")
	do("GET", "/fast", 200, "ok")
	if d := do("GET", "/silent", 504, ""); d > 3*time.Second {
		t.Fatalf("GET without an answer took %v", d)
	}
	do("GET", "/fast", 200, "ok")
	if d := do("POST", "/silent", 504, ""); d > 3*time.Second {
		t.Fatalf("POST without an answer took %v", d)
	}
	if n := u.conns.Load(); n != 2 {
		// One for the first four requests (dropped on /silent's timeout),
		// one for the rest.
		t.Fatalf("%d upstream connections, want 2", n)
	}
}
