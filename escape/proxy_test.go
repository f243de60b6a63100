package escape

import (
	"encoding/hex"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/sandbox"
)

// TestThroughGateway covers the cases that attack the data plane itself:
// the proxy, the DNS filter and credential handling, with the allowed paths
// checked alongside.
func TestThroughGateway(t *testing.T) {
	e := newEnv(t)
	svc := runOpts{services: true}
	webIP := e.inet.Web.String()

	type tcase struct {
		name  string
		allow bool // an allowed action that must keep working
		args  []string
		want  string // for an escape: what proves the intended layer stopped it
		check func(t *testing.T, out string)
	}
	// A stand-in for the data plane's admin/metrics listener (cagent proxy
	// --admin, cagent up): on the host, on every address.
	admin, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	adminHits := make(chan string, 16)
	go func() {
		for {
			c, err := admin.Accept()
			if err != nil {
				return
			}
			adminHits <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	ap := strconv.Itoa(admin.Addr().(*net.TCPAddr).Port)

	cases := []tcase{
		{name: "allowed: HTTP through the explicit proxy", allow: true, args: []string{"http", "http://web.test/hello"},
			check: func(t *testing.T, out string) { wantIn(t, out, `"request_uri":"/hello"`) }},
		{name: "allowed: HTTP ignoring the proxy variables (transparent, by Host)", allow: true, args: []string{"http", "http://web.test/t", "-noproxy"}},
		{name: "allowed: HTTPS tunnel through CONNECT", allow: true, args: []string{"http", "https://web.test/tunnel", "-insecure"}},
		{name: "allowed: HTTPS ignoring the proxy variables (transparent, by SNI)", allow: true, args: []string{"http", "https://web.test/sni", "-noproxy", "-insecure"}},
		{name: "allowed: intercepted HTTPS trusted via SSL_CERT_FILE, credential injected", allow: true, args: []string{"http", "https://api.test/v1/models"}},
		{name: "allowed: DNS of an allowed name answers the gateway", allow: true, args: []string{"resolve", "web.test"}},
		{name: "allowed: DNS of a short, plain name under an allowed zone", allow: true, args: []string{"resolve", "ok.exfil.test"}},

		{name: "allowed: a few distinct names under an allowed zone", allow: true, args: []string{"resolve-many", "few.exfil.test", "5"}},

		{name: "explicit proxy to a name not in the policy", want: "403", args: []string{"http", "http://other.test/"}},
		{name: "DNS of a name not in the policy", want: "no such host", args: []string{"resolve", "other.test"}},
		{name: "CONNECT to an IP literal", want: "403", args: []string{"connect", "gw:3128", webIP + ":443"}},
		{name: "CONNECT to the catcher's IP literal", want: "403", args: []string{"connect", "gw:3128", e.inet.Catcher.String() + ":443"}},
		{name: "CONNECT to an allowed name on a port not allowed", want: "403", args: []string{"connect", "gw:3128", "web.test:7777"}},
		{name: "CONNECT to an allowed name with a different SNI (tunnel)", args: []string{"connect", "gw:3128", "web.test:443", "other.test"}},
		{name: "CONNECT to an allowed name with a different SNI (intercepted)", args: []string{"connect", "gw:3128", "api.test:443", "other.test"}},
		{name: "Host header differing from the CONNECT target", args: []string{"connect", "gw:3128", "api.test:443", "api.test", "other.test"}},
		{name: "transparent TLS with a disallowed SNI", args: []string{"tls", "gw:443", "other.test"}},
		{name: "transparent TLS with no SNI", args: []string{"tls", "gw:443", ""}},
		{name: "transparent HTTP with a disallowed Host", want: "403", args: []string{"rawhttp", "gw:80", "GET / HTTP/1.1", "other.test"}},
		{name: "explicit proxy absolute-form to an IP literal", want: "403", args: []string{"rawhttp", "gw:3128", "GET http://" + webIP + "/ HTTP/1.1", webIP}},
		{name: "allowed name resolving to loopback", want: "forbidden_address", args: []string{"http", "http://loop.test/"}},
		{name: "allowed name resolving to a private address", want: "forbidden_address", args: []string{"http", "http://private.test/"}},
		{name: "allowed name resolving to 169.254.169.254 (metadata)", want: "forbidden_address", args: []string{"http", "http://meta.test/"}},
		{name: "allowed name resolving to loopback (CONNECT)", want: "forbidden_address", args: []string{"connect", "gw:3128", "loop.test:443"}},
		{name: "allowed name resolving to 169.254.169.254 (transparent)", want: "forbidden_address", args: []string{"http", "http://meta.test/", "-noproxy"}},

		{name: "admin/metrics port on the gateway address", args: []string{"tcp", "gw:" + ap}},
		{name: "admin/metrics port through the explicit proxy (loopback)", want: "403", args: []string{"rawhttp", "gw:3128", "GET http://127.0.0.1:" + ap + "/metrics HTTP/1.1", "127.0.0.1:" + ap}},
		{name: "admin/metrics port through the explicit proxy (localhost)", want: "403", args: []string{"rawhttp", "gw:3128", "GET http://localhost:" + ap + "/metrics HTTP/1.1", "localhost:" + ap}},
		{name: "admin/metrics port through CONNECT (gateway address)", want: "403", args: []string{"connect", "gw:3128", "gw:" + ap}},

		{name: "path filter: denied path", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/v1/admin HTTP/1.1", "api.test"}},
		{name: "path filter: encoded character", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/v1/%61dmin HTTP/1.1", "api.test"}},
		{name: "path filter: encoded slash", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/v1%2Fadmin HTTP/1.1", "api.test"}},
		{name: "path filter: dot segments", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/v1/x/../admin HTTP/1.1", "api.test"}},
		{name: "path filter: encoded dot segments", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/v1/x/%2e%2e/admin HTTP/1.1", "api.test"}},
		{name: "path filter: double slash", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/v1//admin HTTP/1.1", "api.test"}},
		{name: "path filter: case", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/V1/ADMIN HTTP/1.1", "api.test"}},
		{name: "path filter: double encoding", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/v1/%2561dmin HTTP/1.1", "api.test"}},
		{name: "path filter: outside the allowed prefix", want: "path_not_allowed", args: []string{"rawhttp", "gw:3128", "GET http://api.test/v2/models HTTP/1.1", "api.test"}},

		{name: "credential in env, files or /proc", args: []string{"find", hex.EncodeToString([]byte(secretValue))}},
		{name: "DNS exfiltration: long label", args: []string{"resolve", strings.Repeat("a", 50) + ".exfil.test"}},
		{name: "DNS exfiltration: high-entropy label", args: []string{"resolve", "q8zk2vx7rm4tj9wp3yb6nc5hd1lf0gs.exfil.test"}},
		{name: "DNS exfiltration: many distinct names", args: []string{"resolve-many", "exfil.test", "40"}},
	}
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var out string
					if tc.allow {
						out = e.mustWork(t, rt.name, tc.name, svc, tc.args...)
					} else {
						out = e.mustFail(t, rt.name, tc.name, svc, tc.args...)
					}
					if strings.Contains(out, secretValue) {
						t.Errorf("the credential leaked into the sandbox's output:\n%s", out)
					}
					if tc.want != "" && !strings.Contains(out, tc.want) {
						t.Errorf("blocked, but not by the intended layer: output lacks %q:\n%s", tc.want, out)
					}
					if tc.check != nil {
						tc.check(t, out)
					}
				})
			}
			t.Run("another sandbox", func(t *testing.T) { e.otherSandbox(t, rt.name) })
			t.Run("fail closed when the proxy and DNS stop", func(t *testing.T) { e.failClosed(t, rt.name) })
		})
	}
	select {
	case h := <-adminHits:
		t.Errorf("the admin/metrics listener was reached from %s", h)
	default:
	}
	e.noDirectTraffic(t)
	// The credential reached the upstream (injected by the proxy) ...
	injected := false
	for _, r := range e.inet.Requests() {
		for _, v := range r.Header["Authorization"] {
			if v == "Bearer "+secretValue {
				injected = true
			}
		}
		if strings.Contains(strings.ToLower(r.RequestURI), "admin") {
			t.Errorf("a denied path reached the upstream: %+v", r)
		}
	}
	if !injected {
		t.Errorf("the proxy never injected the credential upstream")
	}
	// ... and no exfiltration query reached the upstream resolver.
	for _, q := range e.inet.Queries() {
		if len(q) > 60 || strings.Contains(q, "q8zk2vx7") {
			t.Errorf("exfiltration query reached the upstream resolver: %s", q)
		}
	}
}

func wantIn(t *testing.T, out, s string) {
	t.Helper()
	if !strings.Contains(out, s) {
		t.Errorf("output lacks %q:\n%s", s, out)
	}
}

// otherSandbox starts sandbox A listening on 0.0.0.0:8080 and checks that
// sandbox B can reach neither A's address nor A's gateway.
func (e *env) otherSandbox(t *testing.T, runtime string) {
	var mu sync.Mutex
	var ga sandbox.Gateway
	got := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		code, _ := e.run(t, runtime, runOpts{services: true, onGateway: func(g sandbox.Gateway) {
			mu.Lock()
			ga = g
			mu.Unlock()
			close(got)
		}}, "listen", "0.0.0.0:8080", "6s")
		done <- code
	}()
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("sandbox A did not start")
	}
	time.Sleep(1500 * time.Millisecond) // let A's command start listening
	mu.Lock()
	a := ga
	mu.Unlock()
	for _, target := range []struct{ name, addr string }{
		{"another sandbox: its address", netip.AddrPortFrom(a.Addr, 8080).String()},
		{"another sandbox: its gateway's proxy port", netip.AddrPortFrom(a.Gateway, 3128).String()},
		{"another sandbox: its gateway's DNS port", netip.AddrPortFrom(a.Gateway, 53).String()},
	} {
		e.mustFail(t, runtime, target.name, runOpts{services: true}, "tcp", target.addr)
	}
	if code := <-done; code == 0 {
		t.Errorf("sandbox A accepted a connection")
	}
	_ = net.IPv4len
}

// failClosed stops the sandbox's proxy and DNS filter while it runs: the
// command, which worked a moment before, is left with no way out at all.
func (e *env) failClosed(t *testing.T, runtime string) {
	var mu sync.Mutex
	var svc *sandbox.Services
	factory := e.services(t, nil)
	o := runOpts{}
	o.newServices = func(g sandbox.Gateway) (*sandbox.Services, error) {
		s, err := factory(g)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		svc = s
		mu.Unlock()
		// Stop both while the probe waits.
		time.AfterFunc(1500*time.Millisecond, func() {
			mu.Lock()
			defer mu.Unlock()
			svc.Proxy.Close()
			svc.DNS.Close()
		})
		return s, err
	}
	e.mustFail(t, runtime, "fail closed: HTTP after the proxy stopped", o, "after", "3s", "http", "http://web.test/late")
	for _, r := range e.inet.Requests() {
		if r.RequestURI == "/late" {
			t.Errorf("a request went out after the proxy stopped: %+v", r)
		}
	}
}
