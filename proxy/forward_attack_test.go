package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"sync/atomic"
	"time"
)

// Adversarial tests of the hand-written forwarder (forward.go): request
// smuggling and response desync between agent, proxy and upstream, header
// hygiene around the credential, and what reaches logs.

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
			var served atomic.Int32
			u := startRaw(t, func(c *rawConn) {
				for {
					if _, _, err := c.readRequest(); err != nil {
						return
					}
					if served.Add(1) > 1 {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
						continue
					}
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
				}
			})
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

