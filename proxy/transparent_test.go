package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/prometheus/client_golang/prometheus"
)

func listen(t *testing.T, serve func(net.Listener) error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestTransparentHTTP(t *testing.T) {
	e := newEnv(t, basicPolicy)
	addr := listen(t, e.p.ServeTransparentHTTP)
	get := func(host, path string) (*http.Response, []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := get(fmt.Sprintf("echo.test:%d", e.echo.plainPort), "/t")
	if resp.StatusCode != 200 || decodeEcho(t, body).Path != "/t" {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	resp, body = get("other.test", "/")
	if resp.StatusCode != 403 || decodeDenial(t, resp, body).Error != codeDestination {
		t.Fatalf("unlisted: %d", resp.StatusCode)
	}
	resp, body = get(fmt.Sprintf("paths.test:%d", e.echo.plainPort), "/v2/")
	if resp.StatusCode != 403 || decodeDenial(t, resp, body).Error != codePath {
		t.Fatalf("path: %d", resp.StatusCode)
	}
}

func TestTransparentTLS(t *testing.T) {
	e := newEnv(t, `
domains:
  - domain: echo.test
    allow_private: true
  - domain: api.test
    allow_private: true
    tls_intercept: true
    credential: {header: Authorization, format: "Bearer {value}", env: TEST_KEY}
`)
	addr := listen(t, e.p.ServeTransparentTLS)
	pool := e.pki.pool.Clone()
	pool.AppendCertsFromPEM(e.p.CACertPEM())
	client := func(sni string) *http.Client {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			},
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: sni},
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	// Tunnelled: the client sees the upstream's own certificate.
	resp, err := client("echo.test").Get("https://echo.test/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS.PeerCertificates[0].Issuer.CommonName != "upstream test CA" {
		t.Fatalf("tunnelled: %d %s", resp.StatusCode, body)
	}
	// Intercepted: the proxy's certificate, and the credential injected.
	resp, err = client("api.test").Get("https://api.test/y")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || decodeEcho(t, body).Header.Get("Authorization") != "Bearer "+testSecret {
		t.Fatalf("intercepted: %d %s", resp.StatusCode, body)
	}
	// Unlisted SNI: the connection is closed without a tunnel.
	if _, err := client("other.test").Get("https://other.test/"); err == nil {
		t.Fatal("unlisted SNI got through")
	}
	// No SNI at all.
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Fatal("a ClientHello without SNI got through")
	}
	var denied int
	for _, ev := range e.events.wait(t, 3) { // open tunnels report when they close
		if ev.Decision == audit.Deny {
			denied++
		}
	}
	if denied < 2 {
		t.Fatalf("events %+v", e.events.all())
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, basicPolicy+"rate_limits: {default: {requests_per_minute: 600}}\negress_limits: {default: 1MiB}\n", func(c *Config) { c.Metrics = reg })
	e.get(fmt.Sprintf("http://echo.test:%d/", e.echo.plainPort))
	e.get("http://other.test/")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, mf := range mfs {
		text.WriteString(mf.String())
	}
	for _, want := range []string{"cagent_proxy_requests_total", `value:"destination_not_allowed"`, "cagent_proxy_bytes_up_total", "cagent_proxy_bytes_down_total", "cagent_proxy_rate_limit_tokens", "cagent_proxy_egress_budget_used_bytes", "cagent_proxy_egress_budget_limit_bytes"} {
		if want == `value:"destination_not_allowed"` {
			continue
		}
		if !strings.Contains(text.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Unlisted hosts do not become label values (unbounded cardinality).
	if strings.Contains(text.String(), "other.test") {
		t.Error("an unlisted host became a metrics label")
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cagent.yaml")
	dnsSrv := startDNS(t)
	pki := newPKI(t)
	echo := startEcho(t, pki)
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("domains:\n  - domain: echo.test\n    ports: [%d]\n    allow_private: true\n", echo.plainPort)), 0o600)
	var mu sync.Mutex
	addrs := map[string]string{}
	ready := make(chan struct{})
	var stdout, stderr syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunConfig{
			ConfigPath: cfgPath, Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", StateDir: filepath.Join(dir, "state"),
			LogFormat: "json", Stdout: &stdout, Stderr: &stderr, Agent: "run-test",
			Upstreams: []netip.AddrPort{dnsSrv.addr},
			OnListen: func(name string, a net.Addr) {
				mu.Lock()
				addrs[name] = a.String()
				if len(addrs) == 2 {
					close(ready)
				}
				mu.Unlock()
			},
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	mu.Lock()
	proxyAddr, adminAddr := addrs["explicit"], addrs["admin"]
	mu.Unlock()

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		var resp *http.Response
		var err error
		for i := 0; i < 50; i++ {
			resp, err = http.Get("http://" + adminAddr + path)
			if err == nil && resp.StatusCode == 200 {
				break
			}
			if resp != nil {
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("admin %s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
	// The sandbox-facing listener does not serve the admin endpoints.
	if resp, err := http.Get("http://" + proxyAddr + "/metrics"); err != nil || resp.StatusCode == 200 {
		t.Fatalf("proxy listener served /metrics: %v", err)
	} else {
		resp.Body.Close()
	}
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET http://echo.test:%d/run HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n", echo.plainPort)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("through Run: %v %v", err, resp)
	}
	c.Close()
	// The audit file is a valid chain with the request in it, and the JSON
	// log format mirrors events to stdout.
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(stdout.String(), `"path":"/run"`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(stdout.String(), `"path":"/run"`) {
		t.Fatalf("stdout lacks the event: %s", stdout.String())
	}
	files, _ := filepath.Glob(filepath.Join(dir, "state", "audit", "*.jsonl"))
	res, err := audit.VerifyFiles(files...)
	if err != nil || res.Broken != nil || res.Events < 1 {
		t.Fatalf("audit files %v: %+v %v", files, res, err)
	}
}
