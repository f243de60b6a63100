package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/policywatch"
	"github.com/miekg/dns"
	"net/netip"
)

// tcpEcho is a raw TCP echo server on loopback.
func tcpEcho(t *testing.T) int { return tcpEchoTB(t) }

func tcpEchoTB(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port
}

func withPort(yaml string, port int) string {
	return strings.ReplaceAll(yaml, "{RAW}", fmt.Sprint(port))
}

func roundTrip(t *testing.T, c net.Conn, msg string) error {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q", buf)
	}
	return nil
}

func TestDNSRebindingDialsCheckedAddress(t *testing.T) {
	raw := tcpEcho(t)
	e := newEnv(t, withPort(`
domains:
  - domain: rebind.test
    ports: [{RAW}]
    allow_private: true
  - domain: strict.test
    ports: [{RAW}]
`, raw))
	// First answer 127.0.0.1, every later one 127.0.0.2.
	e.dns.mu.Lock()
	e.dns.next["rebind.test."] = [][]netip.Addr{{netip.MustParseAddr("127.0.0.1")}}
	e.dns.answers["rebind.test."] = []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	// A mixed answer: one public address and loopback.
	e.dns.answers["strict.test."] = []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("127.0.0.1")}
	e.dns.mu.Unlock()

	c, resp := e.rawConnect(fmt.Sprintf("rebind.test:%d", raw))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := roundTrip(t, c, "ping"); err != nil {
		t.Fatal(err)
	}
	if got := e.dials.all(); len(got) != 1 || got[0] != fmt.Sprintf("127.0.0.1:%d", raw) {
		t.Fatalf("dialed %v, want exactly the checked address", got)
	}
	if n := e.dns.count("rebind.test"); n != 1 {
		t.Fatalf("%d A lookups, want 1 (no second lookup before dialing)", n)
	}
	_, resp = e.rawConnect(fmt.Sprintf("strict.test:%d", raw))
	if resp.StatusCode != 403 || resp.Header.Get("X-Cagent-Deny-Reason") != codeForbidden {
		t.Fatalf("mixed public/loopback answer: status %d %s", resp.StatusCode, resp.Header.Get("X-Cagent-Deny-Reason"))
	}
	if len(e.dials.all()) != 1 {
		t.Fatalf("a refused answer was dialed: %v", e.dials.all())
	}
}

func TestForbiddenClasses(t *testing.T) {
	e := newEnv(t, `
domains:
  - domain: "*.x.test"
    ports: [1234]
  - domain: meta.example.com
    ports: [80]
    allow_private: true
`)
	for name, addr := range map[string]string{
		"loop.x.test": "127.0.0.1", "ten.x.test": "10.1.2.3", "linklocal.x.test": "169.254.1.1",
		"cgnat.x.test": "100.64.0.1", "meta.x.test": "169.254.169.254", "v6loop.x.test": "::1", "mapped.x.test": "::ffff:127.0.0.1",
	} {
		e.dns.set(name, addr)
		_, resp := e.rawConnect(name + ":1234")
		if resp.StatusCode != 403 || resp.Header.Get("X-Cagent-Deny-Reason") != codeForbidden {
			t.Errorf("%s -> %s: status %d %s", name, addr, resp.StatusCode, resp.Header.Get("X-Cagent-Deny-Reason"))
		}
	}
	// allow_private never opens the metadata address.
	e.dns.set("meta.example.com", "169.254.169.254")
	_, resp := e.rawConnect("meta.example.com:80")
	if resp.StatusCode != 403 || resp.Header.Get("X-Cagent-Deny-Reason") != codeForbidden {
		t.Errorf("metadata with allow_private: status %d", resp.StatusCode)
	}
	if d := e.dials.all(); len(d) != 0 {
		t.Fatalf("forbidden addresses dialed: %v", d)
	}
}

func TestIPRanges(t *testing.T) {
	raw := tcpEcho(t)
	e := newEnv(t, withPort(`
ip_ranges:
  - {cidr: 127.0.0.0/8, ports: [{RAW}]}
  - {cidr: 169.254.0.0/16}
`, raw))
	c, resp := e.rawConnect(fmt.Sprintf("127.0.0.1:%d", raw))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := roundTrip(t, c, "db"); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"127.0.0.1:1", "169.254.169.254:80", "[::1]:" + fmt.Sprint(raw)} {
		_, resp := e.rawConnect(target)
		if resp.StatusCode != 403 {
			t.Errorf("%s: status %d", target, resp.StatusCode)
		}
	}
}

// TestSmuggling sends framing that upstreams have disagreed about. The
// proxy parses each message once and re-frames it, so whatever it parsed as a
// second request is itself a request the policy checks.
func TestSmuggling(t *testing.T) {
	e := newEnv(t, basicPolicy)
	host := fmt.Sprintf("echo.test:%d", e.echo.plainPort)
	send := func(raw string) []*http.Response {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, raw)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		br := bufio.NewReader(c)
		var out []*http.Response
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return out
			}
			io.Copy(io.Discard, resp.Body)
			out = append(out, resp)
			if resp.Close {
				return out
			}
		}
	}
	// CL and TE together: TE wins (RFC 9112), and the bytes after the chunked
	// body are a second request, to an unlisted host: refused.
	rs := send(fmt.Sprintf("POST http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://other.test/smuggled HTTP/1.1\r\nHost: other.test\r\n\r\n", host, host))
	if len(rs) < 2 || rs[0].StatusCode != 200 || rs[1].StatusCode != 403 {
		t.Fatalf("CL+TE: responses %v", statuses(rs))
	}
	// Conflicting Content-Lengths and unknown codings are refused outright.
	for _, raw := range []string{
		fmt.Sprintf("POST http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", host, host),
		fmt.Sprintf("POST http://%s/ HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", host, host),
		fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\nHost: other.test\r\n\r\n", host, host),
	} {
		rs := send(raw)
		if len(rs) == 0 || rs[0].StatusCode < 400 {
			t.Errorf("%q: responses %v", raw, statuses(rs))
		}
	}
	for _, ev := range e.events.all() {
		if ev.Host == "other.test" && ev.Decision != audit.Deny {
			t.Fatalf("smuggled request allowed: %+v", ev)
		}
	}
}

func statuses(rs []*http.Response) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.StatusCode)
	}
	return out
}

func TestOversizedHeaders(t *testing.T) {
	e := newEnv(t, basicPolicy+"proxy: {max_header_bytes: 4KiB}\n")
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://echo.test:%d/", e.echo.plainPort), nil)
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	resp, _ := e.do(req)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, `
domains:
  - domain: echo.test
    ports: [{PLAIN}]
    allow_private: true
    rate_limit: {requests_per_minute: 1, burst_size: 2}
`)
	u := fmt.Sprintf("http://echo.test:%d/", e.echo.plainPort)
	for i := 0; i < 2; i++ {
		if resp, _ := e.get(u); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	resp, body := e.get(u)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if d := decodeDenial(t, resp, body); d.Error != codeRateLimited {
		t.Fatalf("denial %+v", d)
	}
}

func TestEgressBudgetHTTP(t *testing.T) {
	e := newEnv(t, `
domains:
  - domain: echo.test
    ports: [{PLAIN}]
    allow_private: true
    egress_limit: 4KiB
`)
	u := fmt.Sprintf("http://echo.test:%d/", e.echo.plainPort)
	post := func(n int) (*http.Response, []byte) {
		req, _ := http.NewRequest("POST", u, strings.NewReader(strings.Repeat("b", n)))
		return e.do(req)
	}
	// Downloads do not count: only bytes sent upstream do.
	for i := 0; i < 3; i++ {
		if resp, _ := e.get(u + "big"); resp.StatusCode != 200 {
			t.Fatalf("download %d: %d", i, resp.StatusCode)
		}
	}
	if resp, body := post(2500); resp.StatusCode != 200 {
		t.Fatalf("first upload: %d %s", resp.StatusCode, body)
	}
	resp, body := post(2500)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second upload: status %d: %s", resp.StatusCode, body)
	}
	if d := decodeDenial(t, resp, body); d.Error != codeBudget {
		t.Fatalf("denial %+v", d)
	}
	used := e.p.budget.Used("echo.test")
	if used > 4096 || used < 2500 {
		t.Fatalf("budget used %d", used)
	}
}

const tunnelBudgetPolicy = `
domains:
  - domain: raw.test
    ports: [{RAW}]
    allow_private: true
    egress_limit: 64KiB
`

func TestEgressBudgetTunnelAndRestart(t *testing.T) {
	raw := tcpEcho(t)
	e := newEnv(t, withPort(tunnelBudgetPolicy, raw))
	c, resp := e.rawConnect(fmt.Sprintf("raw.test:%d", raw))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	go io.Copy(io.Discard, c)
	chunk := strings.Repeat("u", 8<<10)
	sent := 0
	var werr error
	for i := 0; i < 64 && werr == nil; i++ {
		_, werr = io.WriteString(c, chunk)
		sent += len(chunk)
		time.Sleep(time.Millisecond)
	}
	evs := e.events.wait(t, 1)
	ev := evs[0]
	if ev.Decision != audit.Deny || ev.Error != codeBudget || ev.BytesUp > 64<<10 || ev.BytesUp < 56<<10 {
		t.Fatalf("tunnel event %+v", ev)
	}
	// A new tunnel is refused before it opens.
	_, resp = e.rawConnect(fmt.Sprintf("raw.test:%d", raw))
	if resp.StatusCode != 429 || resp.Header.Get("X-Cagent-Deny-Reason") != codeBudget || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after budget: status %d", resp.StatusCode)
	}
	// The counters survive a restart.
	e.p.Close()
	cfg := e.cfg
	cfg.Metrics = nil
	p2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if used := p2.budget.Used("raw.test"); used < 56<<10 {
		t.Fatalf("after restart the budget shows %d bytes", used)
	}
}

func TestReloadKeepsOpenTunnel(t *testing.T) {
	raw := tcpEcho(t)
	yaml := func(name string) string {
		return withPort(fmt.Sprintf("domains:\n  - domain: %s\n    ports: [{RAW}]\n    allow_private: true\n", name), raw)
	}
	e := newEnv(t, yaml("raw.test"))
	path := filepath.Join(t.TempDir(), "cagent.yaml")
	os.WriteFile(path, []byte(yaml("raw.test")), 0o600)
	w, err := policywatch.Watch(context.Background(), path, nil, e.p.SetPolicy)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	c, resp := e.rawConnect(fmt.Sprintf("raw.test:%d", raw))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := roundTrip(t, c, "before"); err != nil {
		t.Fatal(err)
	}
	// An invalid file changes nothing.
	os.WriteFile(path, []byte("domains: [{domain: \"*.com\"}]\n"), 0o600)
	if err := w.Reload(); err == nil {
		t.Fatal("invalid policy accepted")
	}
	if _, resp := e.rawConnect(fmt.Sprintf("raw.test:%d", raw)); resp.StatusCode != 200 {
		t.Fatalf("after a rejected reload: %d", resp.StatusCode)
	}
	os.WriteFile(path, []byte(yaml("other.test")), 0o600)
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, resp := e.rawConnect(fmt.Sprintf("raw.test:%d", raw)); resp.StatusCode != 403 {
		t.Fatalf("after reload a removed domain got %d", resp.StatusCode)
	}
	if err := roundTrip(t, c, "after"); err != nil {
		t.Fatalf("open tunnel broken by reload: %v", err)
	}
}

func TestTunnelLimitAndIdle(t *testing.T) {
	raw := tcpEcho(t)
	e := newEnv(t, withPort(`
proxy: {max_tunnels: 1, idle_timeout: 1s}
domains:
  - domain: raw.test
    ports: [{RAW}]
    allow_private: true
`, raw))
	c, resp := e.rawConnect(fmt.Sprintf("raw.test:%d", raw))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, resp := e.rawConnect(fmt.Sprintf("raw.test:%d", raw)); resp.StatusCode != 503 {
		t.Fatalf("second tunnel: %d", resp.StatusCode)
	}
	if err := roundTrip(t, c, "x"); err != nil {
		t.Fatal(err)
	}
	// Idle: the proxy closes the tunnel.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded on an idle tunnel")
	}
	found := false
	for _, ev := range e.events.wait(t, 2) {
		found = found || ev.Error == "idle_timeout"
	}
	if !found {
		t.Fatalf("no idle_timeout event: %+v", e.events.all())
	}
}

func TestUpstreamTimeout(t *testing.T) {
	e := newEnv(t, `
domains:
  - domain: echo.test
    ports: [{PLAIN}]
    allow_private: true
    timeout: 500ms
`)
	resp, body := e.get(fmt.Sprintf("http://echo.test:%d/slow", e.echo.plainPort))
	if resp.StatusCode != 504 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if d := decodeDenial(t, resp, body); d.Error != codeTimeout {
		t.Fatalf("denial %+v", d)
	}
}

func TestUnresolvable(t *testing.T) {
	e := newEnv(t, `
domains:
  - domain: gone.example.org
`)
	resp, body := e.get("http://gone.example.org/")
	if resp.StatusCode != 502 || decodeDenial(t, resp, body).Error != codeUpstream {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
}

func TestReportMode(t *testing.T) {
	e := newEnv(t, `
enforcement: report
domains:
  - domain: ro.test
    ports: [{PLAIN}]
    allow_private: true
    read_only: true
`)
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://ro.test:%d/", e.echo.plainPort), strings.NewReader("x"))
	if resp, body := e.do(req); resp.StatusCode != 200 {
		t.Fatalf("report mode POST: %d %s", resp.StatusCode, body)
	}
	ev := e.events.wait(t, 1)[0]
	if ev.Decision != audit.Report || ev.Error != codeMethod {
		t.Fatalf("event %+v", ev)
	}
	// Forbidden addresses stay refused in report mode.
	resp, _ := e.get(fmt.Sprintf("http://unlisted.test:%d/", e.echo.plainPort))
	if resp.StatusCode != 403 || resp.Header.Get("X-Cagent-Deny-Reason") != codeForbidden {
		t.Fatalf("report mode loopback: %d", resp.StatusCode)
	}
}

// miniProxy is a CONNECT-only upstream proxy that records its targets.
func miniProxy(t *testing.T) (string, *dialLog) {
	t.Helper()
	log := &dialLog{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "CONNECT" {
			http.Error(w, "connect only", 405)
			return
		}
		log.add(r.Host)
		h, port, _ := net.SplitHostPort(r.Host)
		_ = h
		up, err := net.Dial("tcp", "127.0.0.1:"+port) // every test name is loopback
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		c, _, _ := http.NewResponseController(w).Hijack()
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
		go func() { io.Copy(up, c); up.Close() }()
		io.Copy(c, up)
		c.Close()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), log
}

func TestUpstreamProxy(t *testing.T) {
	addr, log := miniProxy(t)
	e := newEnv(t, `
proxy: {upstream_proxy: "http://`+addr+`"}
domains:
  - domain: echo.test
    ports: [{PLAIN}, {TLS}]
    allow_private: true
`)
	resp, body := e.get(fmt.Sprintf("http://echo.test:%d/via", e.echo.plainPort))
	if resp.StatusCode != 200 || decodeEcho(t, body).Path != "/via" {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	resp, _ = e.get(fmt.Sprintf("https://echo.test:%d/via", e.echo.tlsPort))
	if resp.StatusCode != 200 {
		t.Fatalf("https status %d", resp.StatusCode)
	}
	got := log.all()
	if len(got) < 2 || got[0] != fmt.Sprintf("echo.test:%d", e.echo.plainPort) {
		t.Fatalf("upstream proxy saw %v", got)
	}
	for _, d := range e.dials.all() {
		if d != addr {
			t.Fatalf("dialed %s directly, not through the upstream proxy", d)
		}
	}
}

var _ = dns.Fqdn
var _ = policy.Version
