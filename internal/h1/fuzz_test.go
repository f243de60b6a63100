package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var headSeeds = []string{
	"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET /index.html HTTP/1.1\r\nHost: www.example.com:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
	"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nProxy-Connection: Keep-Alive\r\nUser-Agent: Go-http-client/1.1\r\n\r\n",
	"POST http://a.example/x HTTP/1.1\r\nhost: a.example\r\nContent-Length: 5\r\n\r\nHost: not-a-header\r\n\r\n",
	"GET / HTTP/1.1\r\nHOST:\tspaced.example \t\r\nX-Host: other\r\nHostname: other\r\n\r\n",
	"GET / HTTP/1.1\nHost: bare-lf.example\n\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nX-Forwarded-Host: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: [::1]:80\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:\r\n\texample.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\t c \r\nX: y\r\n\r\n",
	"GET / HTTP/1.1\nHost:0\n \n\n",
	"GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:h",
	"\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\nHost: in-body\r\n\r\n",
}

// hostFolded reports whether the first Host line of the header block in raw
// is followed by an obs-fold continuation line.
func hostFolded(raw []byte) bool {
	lines := strings.Split(string(raw), "\n")
	for i := 1; i+1 < len(lines); i++ {
		line := strings.TrimSuffix(lines[i], "\r")
		if line == "" {
			return false
		}
		if len(line) > 4 && line[4] == ':' && strings.EqualFold(line[:4], "host") {
			next := lines[i+1]
			return len(next) > 0 && (next[0] == ' ' || next[0] == '\t')
		}
	}
	return false
}

// FuzzHeaderValue checks headerValue(raw, "host") against textproto, the
// parser http.ReadRequest uses: the number of Host fields, and the first
// one's value (which net/http's server validates).
func FuzzHeaderValue(f *testing.F) {
	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		val, n := headerValue(raw, "host")
		if n < 0 || (n == 0 && val != "") {
			t.Fatalf("headerValue = %q, %d", val, n)
		}
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
		if _, err := tp.ReadLine(); err != nil {
			return
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		hosts := h["Host"]
		if n != len(hosts) {
			t.Fatalf("headerValue counts %d Host fields, textproto %d (%q)", n, len(hosts), hosts)
		}
		if n == 0 {
			return
		}
		// textproto trims each line; only an obs-fold can leave white space
		// at an end, and net/http checks the value as textproto made it.
		if want := hosts[0]; val != want {
			t.Fatalf("headerValue value %q, textproto %q (folded: %v)", val, hosts[0], hostFolded(raw))
		}
	})
}

// TestHeaderValueFold: a folded Host value is checked as textproto joins
// it (it once was checked without its continuation line).
func TestHeaderValueFold(t *testing.T) {
	val, n := headerValue([]byte("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n"), "host")
	if n != 1 {
		t.Fatalf("count %d", n)
	}
	if val != "a b" {
		t.Fatalf("headerValue ignores obs-fold: %q, net/http checks %q", val, "a b")
	}
}

// FuzzServe feeds arbitrary bytes to a real server as one client's request
// stream: the server must not panic, must answer or close in time, and every
// answer must parse.
func FuzzServe(f *testing.F) {
	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /cl HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /empty HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: nope\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET /cl HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nshort",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /trailer HTTP/1.1\r\nHost: a\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("y", 5000) + "\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("y", 3000) + "\xff\x00" + strings.Repeat("y", 3000) + "\r\n\r\n",
		"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
		"",
	} {
		f.Add([]byte(s))
	}

	var mu sync.Mutex
	methods := map[string][]string{} // by client address
	ts := startServer(f, hf(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		methods[r.RemoteAddr] = append(methods[r.RemoteAddr], r.Method)
		mu.Unlock()
		n, err := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		if r.Method == http.MethodConnect {
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/cl"):
			w.Header().Set("Content-Length", "2")
			io.WriteString(w, "ok")
		case strings.HasPrefix(r.URL.Path, "/empty"):
		case strings.HasPrefix(r.URL.Path, "/trailer"):
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, "t")
			w.Header().Set("X-T", "v")
		default:
			fmt.Fprintf(w, "%s %q %d %v", r.Method, r.URL.Path, n, err != nil)
		}
	}), func(s *Server) { s.MaxHeaderBytes = 4096 })

	f.Fuzz(func(t *testing.T, raw []byte) {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			conn.Write(raw)
			conn.(*net.TCPConn).CloseWrite()
		}()
		defer func() { conn.Close(); <-wrote }()
		key := conn.LocalAddr().String()
		br := bufio.NewReader(conn)
		for i := 0; ; {
			if _, err := br.Peek(1); err != nil {
				if isTimeout(err) {
					t.Fatalf("after %d answers the server neither answered nor closed", i)
				}
				break
			}
			method := http.MethodGet
			mu.Lock()
			if m := methods[key]; i < len(m) {
				method = m[i]
			}
			mu.Unlock()
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if errors.Is(err, syscall.ECONNRESET) {
				// The server closed with bytes of ours unread (after a
				// refusal, as net/http's server does): the reset may cut
				// the answer.
				break
			}
			if err != nil {
				rest, _ := br.Peek(br.Buffered())
				t.Fatalf("answer %d does not parse: %v (next bytes %.200q)", i, err, rest)
			}
			if _, err := io.ReadAll(resp.Body); err != nil {
				if errors.Is(err, syscall.ECONNRESET) && resp.Close {
					break
				}
				t.Fatalf("answer %d (%d): body: %v", i, resp.StatusCode, err)
			}
			if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
				i++
			}
		}
		mu.Lock()
		delete(methods, key)
		mu.Unlock()
	})
}
