package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDNS answers A queries from a table; names not in it get NXDOMAIN.
// Tests change answers between queries to play rebinding games.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr // fqdn -> addresses; "*.test." matches any .test name
	queries map[string]int
	next    map[string][][]netip.Addr // per-name queue of answers to give before answers
	ttl     uint32                    // TTL of every answer (0: not cacheable)
	addr    netip.AddrPort
}

func startDNS(t testing.TB) *fakeDNS {
	t.Helper()
	f := &fakeDNS{answers: map[string][]netip.Addr{"*.test.": {netip.MustParseAddr("127.0.0.1")}}, queries: map[string]int{}, next: map[string][][]netip.Addr{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: f}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	f.addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	return f
}

func (f *fakeDNS) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	f.answers[dns.Fqdn(name)] = as
}

func (f *fakeDNS) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[dns.Fqdn(name)]
}

func (f *fakeDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	f.mu.Lock()
	if q.Qtype == dns.TypeA {
		f.queries[name]++
	}
	addrs, ok := f.answers[name]
	if !ok && strings.HasSuffix(name, ".test.") {
		addrs, ok = f.answers["*.test."]
	}
	if q.Qtype == dns.TypeA {
		if queue := f.next[name]; len(queue) > 0 {
			addrs, ok, f.next[name] = queue[0], true, queue[1:]
		}
	}
	ttl := f.ttl
	f.mu.Unlock()
	if !ok {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	for _, a := range addrs {
		if q.Qtype == dns.TypeA && a.Is4() {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: a.AsSlice()})
		}
		if q.Qtype == dns.TypeAAAA && a.Is6() {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: a.AsSlice()})
		}
	}
	w.WriteMsg(m)
}

// testPKI is a CA and a server certificate for *.test, 127.0.0.1 and localhost.
type testPKI struct {
	pool   *x509.CertPool
	caPEM  []byte
	server tls.Certificate
}

func (p *testPKI) pem() []byte { return p.caPEM }

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "echo.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames:    []string{"*.test", "localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return &testPKI{pool: pool, caPEM: caPEM, server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// echoed is what the echo server saw.
type echoed struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Query  string      `json:"query"`
	Host   string      `json:"host"`
	Header http.Header `json:"header"`
	Body   int         `json:"body"`
	TLS    bool        `json:"tls"`
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/big" {
		w.Write(bytes.Repeat([]byte("x"), 1<<20))
		return
	}
	if r.URL.Path == "/slow" {
		time.Sleep(2 * time.Second)
	}
	json.NewEncoder(w).Encode(echoed{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Host: r.Host, Header: r.Header, Body: int(n), TLS: r.TLS != nil})
}

// servers is a plain and a TLS echo server on loopback.
type servers struct {
	plain, tls *httptest.Server
	plainPort  int
	tlsPort    int
}

func startEcho(t testing.TB, pki *testPKI) *servers {
	t.Helper()
	s := &servers{plain: httptest.NewServer(http.HandlerFunc(echoHandler))}
	s.tls = httptest.NewUnstartedServer(http.HandlerFunc(echoHandler))
	s.tls.TLS = &tls.Config{Certificates: []tls.Certificate{pki.server}}
	s.tls.StartTLS()
	t.Cleanup(s.plain.Close)
	t.Cleanup(s.tls.Close)
	s.plainPort = s.plain.Listener.Addr().(*net.TCPAddr).Port
	s.tlsPort = s.tls.Listener.Addr().(*net.TCPAddr).Port
	return s
}

// captured collects audit events.
type captured struct {
	mu     sync.Mutex
	events []audit.Event
}

func (c *captured) Emit(e *audit.Event) {
	c.mu.Lock()
	c.events = append(c.events, *e)
	c.mu.Unlock()
}

func (c *captured) all() []audit.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]audit.Event(nil), c.events...)
}

// last waits for at least n events and returns the last.
func (c *captured) wait(t *testing.T, n int) []audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ev := c.all(); len(ev) >= n {
			return ev
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("expected %d events, got %d: %+v", n, len(c.all()), c.all())
	return nil
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// env is one proxy under test with its fake DNS, upstreams and clients.
type env struct {
	t      testing.TB
	p      *Proxy
	addr   string
	dns    *fakeDNS
	pki    *testPKI
	echo   *servers
	events *captured
	logs   *syncBuf
	dials  *dialLog
	state  string
	vars   map[string]string
	cfg    Config
}

type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dialLog) add(a string) { d.mu.Lock(); d.addrs = append(d.addrs, a); d.mu.Unlock() }
func (d *dialLog) all() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

const testSecret = "sk-CAGENTTEST-7f3a9c1e5b"

// newEnv starts upstreams and a proxy whose policy is yaml with {PLAIN} and
// {TLS} replaced by the echo servers' ports.
func newEnv(t testing.TB, yaml string, mods ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, dns: startDNS(t), pki: newPKI(t), events: &captured{}, logs: &syncBuf{}, dials: &dialLog{}, state: t.TempDir()}
	e.echo = startEcho(t, e.pki)
	e.vars = map[string]string{"TEST_KEY": testSecret}
	pol := e.policy(yaml)
	var d net.Dialer
	e.cfg = Config{
		Policy:    pol,
		StateDir:  e.state,
		Audit:     e.events,
		Logger:    slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Agent:     "test-agent",
		Upstreams: []netip.AddrPort{e.dns.addr},
		RootCAs:   e.pki.pool,
		LookupEnv: func(k string) (string, bool) { v, ok := e.vars[k]; return v, ok },
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if network == "tcp" {
				e.dials.add(addr)
				// Stand-ins for the well-known ports, which tests cannot bind.
				if strings.HasSuffix(addr, ":443") {
					addr = strings.TrimSuffix(addr, "443") + fmt.Sprint(e.echo.tlsPort)
				} else if strings.HasSuffix(addr, ":80") {
					addr = strings.TrimSuffix(addr, "80") + fmt.Sprint(e.echo.plainPort)
				}
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	for _, m := range mods {
		m(&e.cfg)
	}
	e.start()
	return e
}

func (e *env) policy(yaml string) *policy.Policy {
	e.t.Helper()
	yaml = strings.ReplaceAll(yaml, "{PLAIN}", fmt.Sprint(e.echo.plainPort))
	yaml = strings.ReplaceAll(yaml, "{TLS}", fmt.Sprint(e.echo.tlsPort))
	pol, err := policy.Parse("test.yaml", []byte(yaml))
	if err != nil {
		e.t.Fatalf("policy: %v", err)
	}
	return pol
}

func (e *env) start() {
	e.t.Helper()
	p, err := New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.ServeExplicit(ln) }()
	e.p, e.addr = p, ln.Addr().String()
	e.t.Cleanup(func() {
		p.Close()
		if err := <-done; err != nil {
			e.t.Errorf("ServeExplicit: %v", err)
		}
	})
}

// client returns an HTTP client using the proxy, trusting the upstream
// test CA and the proxy's interception CA.
func (e *env) client() *http.Client {
	pool := e.pki.pool.Clone()
	pool.AppendCertsFromPEM(e.p.CACertPEM())
	u, _ := url.Parse("http://" + e.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(u), TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: false}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get sends a request through the proxy and returns the status, the echo (if
// any) and the body.
func (e *env) do(req *http.Request) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := e.client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func (e *env) get(rawurl string) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", rawurl, nil)
	return e.do(req)
}

func decodeEcho(t *testing.T, body []byte) echoed {
	t.Helper()
	var ec echoed
	if err := json.Unmarshal(body, &ec); err != nil {
		t.Fatalf("not an echo: %v: %s", err, body)
	}
	return ec
}

func decodeDenial(t *testing.T, resp *http.Response, body []byte) denialBody {
	t.Helper()
	var d denialBody
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("not a denial (%d): %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Cagent-Deny-Reason"); got != d.Error {
		t.Fatalf("X-Cagent-Deny-Reason %q, body error %q", got, d.Error)
	}
	return d
}

// rawConnect opens a CONNECT tunnel by hand and returns the conn and the
// response status line.
func (e *env) rawConnect(target string) (net.Conn, *http.Response) {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufioReader(c), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, resp
}
