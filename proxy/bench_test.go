package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/cagent-dev/cagent/audit"
)

// Benchmarks pair each path through the proxy with the direct path, so
// `go test -bench . ./proxy` prints the overhead side by side.

const benchPolicy = `
domains:
  - domain: echo.test
    ports: [{PLAIN}, {TLS}, {RAW}]
    allow_private: true
  - domain: api.test
    ports: [{TLS}]
    allow_private: true
    tls_intercept: true
`

func benchEnv(b *testing.B) (*env, int) {
	raw := tcpEchoTB(b)
	e := newEnv(b, withPort(benchPolicy, raw))
	return e, raw
}

func benchGet(b *testing.B, c *http.Client, url string) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

func BenchmarkHTTPKeepAlive(b *testing.B) {
	e, _ := benchEnv(b)
	b.Run("direct", func(b *testing.B) {
		tr := &http.Transport{MaxIdleConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		benchGet(b, &http.Client{Transport: tr}, e.echo.plain.URL+"/")
	})
	b.Run("proxy", func(b *testing.B) {
		c := e.client()
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
		benchGet(b, c, fmt.Sprintf("http://echo.test:%d/", e.echo.plainPort))
	})
}

func BenchmarkInterceptedHTTPS(b *testing.B) {
	e, _ := benchEnv(b)
	b.Run("direct", func(b *testing.B) {
		tr := &http.Transport{MaxIdleConnsPerHost: 64, TLSClientConfig: &tls.Config{RootCAs: e.pki.pool, ServerName: "api.test"}}
		defer tr.CloseIdleConnections()
		benchGet(b, &http.Client{Transport: tr}, e.echo.tls.URL+"/")
	})
	b.Run("proxy", func(b *testing.B) {
		c := e.client()
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
		benchGet(b, c, fmt.Sprintf("https://api.test:%d/", e.echo.tlsPort))
	})
}

// BenchmarkConnectThroughput pushes 1 MiB per op through a tunnel to a TCP
// echo server and reads it back.
func BenchmarkConnectThroughput(b *testing.B) {
	e, raw := benchEnv(b)
	run := func(b *testing.B, c net.Conn) {
		buf := make([]byte, 1<<20)
		back := make([]byte, 1<<20)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			errc := make(chan error, 1)
			go func() { _, err := c.Write(buf); errc <- err }()
			if _, err := io.ReadFull(c, back); err != nil {
				b.Fatal(err)
			}
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", raw))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c)
	})
	b.Run("proxy", func(b *testing.B) {
		c, resp := e.rawConnect(fmt.Sprintf("echo.test:%d", raw))
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		defer c.Close()
		run(b, c)
	})
}

// BenchmarkAuditSink is the cost of one event on the request path: a
// hash-chained file written by the caller, or the same file behind the
// queue (the caller only copies the event into a channel).
func BenchmarkAuditSink(b *testing.B) {
	ev := audit.Event{Type: audit.TypeHTTP, Agent: "bench", Decision: audit.Allow, Rule: "domains api.test", Method: "GET", Scheme: "http",
		Host: "api.test", Port: 80, Path: "/v1/models", Status: 200, BytesUp: 120, BytesDown: 64, Client: "127.0.0.1:40000", Upstream: "127.0.0.1:8080"}
	run := func(b *testing.B, s audit.Sink) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e := ev
				s.Emit(&e)
			}
		})
	}
	b.Run("file", func(b *testing.B) {
		fs, err := audit.OpenFile(filepath.Join(b.TempDir(), "a.jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		defer fs.Close()
		run(b, fs)
	})
	b.Run("queue", func(b *testing.B) {
		fs, err := audit.OpenFile(filepath.Join(b.TempDir(), "a.jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		defer fs.Close()
		q := audit.NewQueue(fs, nil)
		run(b, q)
		q.Close() // inside the timing: every event is written
	})
}
