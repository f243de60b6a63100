package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/audit"
	"github.com/prometheus/client_golang/prometheus"
)

const credPolicy = `
domains:
  - domain: api.test
    alias: api
    ports: [80, 443, {PLAIN}, {TLS}]
    allow_private: true
    tls_intercept: true
    credential: {header: Authorization, format: "Bearer {value}", env: TEST_KEY}
  - domain: other.test
    ports: [{PLAIN}, {TLS}]
    allow_private: true
    tls_intercept: true
  - domain: missing.test
    ports: [{TLS}]
    allow_private: true
    tls_intercept: true
    credential: {header: X-Api-Key, env: NOT_SET}
`

func TestCredentialInjectedThroughAlias(t *testing.T) {
	e := newEnv(t, credPolicy)
	req, _ := http.NewRequest("POST", "http://api.devbox.local/v1/chat?stream=1", strings.NewReader("hello"))
	req.Header.Set("Authorization", "Bearer agent-own-token")
	req.Header.Add("authorization", "Bearer second")
	resp, body := e.do(req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	ec := decodeEcho(t, body)
	if got := ec.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+testSecret {
		t.Fatalf("Authorization upstream = %q", got)
	}
	if !ec.TLS || ec.Host != "api.test" || ec.Path != "/v1/chat" || ec.Query != "stream=1" || ec.Body != 5 {
		t.Fatalf("echo %+v", ec)
	}
	// The upstream dial went to port 443 of the checked address.
	if d := e.dials.all(); len(d) != 1 || d[0] != "127.0.0.1:443" {
		t.Fatalf("dials %v", d)
	}
	ev := e.events.wait(t, 1)[0]
	if ev.Credential != "env:TEST_KEY" || ev.Host != "api.test" || ev.Port != 443 {
		t.Fatalf("event %+v", ev)
	}
}

func TestCredentialInjectedIntercepted(t *testing.T) {
	e := newEnv(t, credPolicy)
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://api.test:%d/v1/models", e.echo.tlsPort), nil)
	req.Header.Set("Authorization", "Basic YWdlbnQ6b3du")
	resp, body := e.do(req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	// The client saw the interception certificate, not the upstream's.
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].Issuer.CommonName == "upstream test CA" {
		t.Fatalf("not intercepted: %+v", resp.TLS)
	}
	ec := decodeEcho(t, body)
	if got := ec.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+testSecret {
		t.Fatalf("Authorization upstream = %q", got)
	}
	evs := e.events.wait(t, 1)
	if ev := evs[0]; ev.Type != audit.TypeHTTP || !ev.Intercepted || ev.Scheme != "https" || ev.Credential != "env:TEST_KEY" {
		t.Fatalf("event %+v", ev)
	}
}

func TestCredentialOnlyForItsEntry(t *testing.T) {
	e := newEnv(t, credPolicy)
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://other.test:%d/", e.echo.tlsPort), nil)
	req.Header.Set("Authorization", "Bearer agent-own")
	resp, body := e.do(req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := decodeEcho(t, body).Header.Get("Authorization"); got != "Bearer agent-own" {
		t.Fatalf("other entry's Authorization = %q", got)
	}
}

func TestCredentialNotSentInClearText(t *testing.T) {
	e := newEnv(t, credPolicy)
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://api.test:%d/", e.echo.plainPort), nil)
	req.Header.Set("Authorization", "Bearer agent-own")
	resp, body := e.do(req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := decodeEcho(t, body).Header.Get("Authorization"); got != "" {
		t.Fatalf("plain-http upstream got Authorization %q", got)
	}
}

func TestInterceptedHostMustMatch(t *testing.T) {
	e := newEnv(t, credPolicy)
	conn, resp := e.rawConnect(fmt.Sprintf("api.test:%d", e.echo.tlsPort))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	pool := e.pki.pool.Clone()
	pool.AppendCertsFromPEM(e.p.CACertPEM())
	tc := tls.Client(conn, &tls.Config{ServerName: "api.test", RootCAs: pool})
	for _, host := range []string{fmt.Sprintf("other.test:%d", e.echo.tlsPort), "api.test", "api.test:443"} {
		fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nAuthorization: x\r\n\r\n", host)
		r, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode != 403 {
			t.Fatalf("Host %s inside api.test tunnel: status %d: %s", host, r.StatusCode, body)
		}
		if d := decodeDenial(t, r, body); d.Error != codeDestination {
			t.Fatalf("denial %+v", d)
		}
	}
	if len(e.dials.all()) != 0 {
		t.Fatalf("upstream dialed: %v", e.dials.all())
	}
}

func TestInterceptedSNIMustMatch(t *testing.T) {
	e := newEnv(t, credPolicy)
	conn, resp := e.rawConnect(fmt.Sprintf("api.test:%d", e.echo.tlsPort))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	pool := e.pki.pool.Clone()
	pool.AppendCertsFromPEM(e.p.CACertPEM())
	tc := tls.Client(conn, &tls.Config{ServerName: "other.test", RootCAs: pool})
	if err := tc.Handshake(); err == nil {
		t.Fatal("intercepted tunnel accepted a different SNI")
	}
}

func TestCredentialMissingFailsClosed(t *testing.T) {
	e := newEnv(t, credPolicy)
	resp, body := e.get(fmt.Sprintf("https://missing.test:%d/", e.echo.tlsPort))
	if resp.StatusCode != 502 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if d := decodeDenial(t, resp, body); d.Error != codeUpstream {
		t.Fatalf("denial %+v", d)
	}
	if len(e.dials.all()) != 0 {
		t.Fatal("request sent without its credential")
	}
}

// TestSecretNeverLeaks drives every path that touches the credential, then
// searches everything the proxy produced for the value.
func TestSecretNeverLeaks(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, credPolicy, func(c *Config) { c.Metrics = reg })
	var bodies strings.Builder
	for _, u := range []string{
		"http://api.devbox.local/v1/x",
		fmt.Sprintf("https://api.test:%d/v1/x", e.echo.tlsPort),
		fmt.Sprintf("http://api.test:%d/", e.echo.plainPort),
		"http://nope.devbox.local/",
		fmt.Sprintf("https://missing.test:%d/", e.echo.tlsPort),
	} {
		resp, body := e.get(u)
		if resp.StatusCode != 200 { // the echo server itself repeats what it got
			fmt.Fprintf(&bodies, "%v %s\n", resp.Header, body)
		}
	}
	// A value with a newline must be refused without echoing it.
	e.vars["TEST_KEY"] = testSecret + "\r\nX-Injected: 1"
	resp, body := e.get("http://api.devbox.local/v1/x")
	if resp.StatusCode != 502 {
		t.Fatalf("CRLF credential: status %d", resp.StatusCode)
	}
	fmt.Fprintf(&bodies, "%v %s\n", resp.Header, body)

	mfs, _ := reg.Gather()
	var metricsText strings.Builder
	for _, mf := range mfs {
		metricsText.WriteString(mf.String())
	}
	var events strings.Builder
	for _, ev := range e.events.all() {
		fmt.Fprintf(&events, "%+v\n", ev)
	}
	for name, out := range map[string]string{"logs": e.logs.String(), "events": events.String(), "metrics": metricsText.String(), "responses": bodies.String()} {
		if strings.Contains(out, "CAGENTTEST") {
			t.Errorf("credential value found in %s", name)
		}
	}
	if !strings.Contains(events.String(), "env:TEST_KEY") {
		t.Error("events do not name the credential")
	}
}

// TestUpstreamCertificateVerified: aliases and intercepted requests verify
// the upstream's certificate, against Config.RootCAs or proxy.ca_bundle.
func TestUpstreamCertificateVerified(t *testing.T) {
	t.Run("untrusted roots", func(t *testing.T) {
		e := newEnv(t, credPolicy, func(c *Config) { c.RootCAs = x509.NewCertPool() })
		resp, body := e.get("http://api.devbox.local/v1/x")
		if resp.StatusCode != 502 || decodeDenial(t, resp, body).Error != codeUpstream {
			t.Fatalf("untrusted upstream: %d %s", resp.StatusCode, body)
		}
		if strings.Contains(e.logs.String(), "CAGENTTEST") {
			t.Fatal("credential in logs")
		}
	})
	t.Run("ca_bundle", func(t *testing.T) {
		// The bundle starts empty (every upstream certificate fails); then
		// it holds the upstream's CA, then a foreign CA. Each SetPolicy builds
		// a new state, which reads the bundle again.
		bundle := filepath.Join(t.TempDir(), "roots.pem")
		os.WriteFile(bundle, nil, 0o600)
		withBundle := credPolicy + "proxy: {ca_bundle: " + bundle + "}\n"
		e := newEnv(t, withBundle, func(c *Config) { c.RootCAs = nil })
		if resp, _ := e.get("http://api.devbox.local/v1/x"); resp.StatusCode != 502 {
			t.Fatalf("empty ca_bundle: %d", resp.StatusCode)
		}
		os.WriteFile(bundle, e.pki.pem(), 0o600)
		e.p.SetPolicy(e.policy(withBundle))
		resp, body := e.get("http://api.devbox.local/v1/x")
		if resp.StatusCode != 200 {
			t.Fatalf("with ca_bundle: %d %s", resp.StatusCode, body)
		}
		os.WriteFile(bundle, newPKI(t).pem(), 0o600)
		e.p.SetPolicy(e.policy(withBundle))
		resp, body = e.get("http://api.devbox.local/v1/x")
		if resp.StatusCode != 502 {
			t.Fatalf("with a foreign ca_bundle: %d %s", resp.StatusCode, body)
		}
	})
}
