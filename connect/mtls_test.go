package connect_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/connect"
	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control"
	"github.com/coder/websocket"
)

// testCA makes a CA and a leaf signed by it (server or client use).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) leaf(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certPEM, keyPEM := ca.leaf(t, "cp", true)
	os.WriteFile(filepath.Join(dir, "cp.pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "cp.key"), keyPEM, 0o600)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}
	t.Cleanup(tr.CloseIdleConnections)
	cp := startCPWith(t, control.Config{DataDir: filepath.Join(dir, "cp"), Listen: "127.0.0.1:0", AgentMTLS: true,
		TLSCert: filepath.Join(dir, "cp.pem"), TLSKey: filepath.Join(dir, "cp.key")}, &http.Client{Transport: tr})
	tpath, agentID, tok := cp.agent("acme")
	a2 := cp.must("POST", tpath+"/agents", map[string]any{"name": "box-2"})
	tok2 := a2["token"].(map[string]any)["token"].(string)

	// The data plane enrolls by itself, then connects with its certificate.
	cp.must("POST", tpath+"/policies", map[string]any{"agent_id": agentID, "entry": entry("pypi.org", "")})
	d := startDP(t, connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp"),
		TLS: &tls.Config{RootCAs: ca.pool}}, nil)
	cur := watch(t, d.c.PolicyPath())
	waitFor(t, "policy over mTLS", 10*time.Second, func() bool { return hasDomain(cur.Load(), "pypi.org") })
	fi, err := os.Stat(filepath.Join(dir, "dp", "connected", "client.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client key: %v", err)
	}
	ownCert, _ := tls.LoadX509KeyPair(filepath.Join(dir, "dp", "connected", "client.pem"), filepath.Join(dir, "dp", "connected", "client.key"))

	// Agent 2 enrolls too (by hand): its certificate is valid, but not agent 1's.
	d2 := startDP(t, connect.Config{URL: cp.URL, Token: tok2, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp2"),
		TLS: &tls.Config{RootCAs: ca.pool}}, nil)
	waitFor(t, "agent 2 connected", 10*time.Second, d2.c.Connected)
	otherCert, _ := tls.LoadX509KeyPair(filepath.Join(dir, "dp2", "connected", "client.pem"), filepath.Join(dir, "dp2", "connected", "client.key"))
	foreignPEM, foreignKey := newTestCA(t).leaf(t, agentID, false)
	foreignCert, _ := tls.X509KeyPair(foreignPEM, foreignKey)

	dial := func(cert *tls.Certificate) (int, error) {
		conf := &tls.Config{RootCAs: ca.pool}
		if cert != nil {
			// Always sent, even when not from the CAs the server names.
			conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		tr := &http.Transport{TLSClientConfig: conf}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, cp.URL+wire.Path, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr},
			HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err == nil {
			c.CloseNow()
			return 101, nil
		}
		if resp != nil {
			return resp.StatusCode, nil
		}
		return 0, err
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want int
	}{
		{"own certificate", &ownCert, 101},
		{"no certificate", nil, 403},
		{"another agent's certificate", &otherCert, 403},
	} {
		if got, err := dial(tc.cert); got != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.name, got, err, tc.want)
		}
	}
	if _, err := dial(&foreignCert); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
	// The agent's REST reads need the certificate too; people's do not.
	if code, m := cp.do("GET", "/api/v1/agent/policy", tok, nil); code != 403 || m["error"] != "client_certificate_required" {
		t.Errorf("agent REST without certificate: %d %v", code, m)
	}
	if code, _ := cp.do("GET", tpath+"/agents", "", nil); code != 200 {
		t.Errorf("admin REST: %d", code)
	}
	// One enrollment per agent: a stolen token cannot get a second certificate.
	code, m := cp.do("POST", "/api/v1/agent/certificate", tok, map[string]any{"csr": "x"})
	if code != 400 && code != 409 {
		t.Errorf("second enrollment: %d %v", code, m)
	}
	csrKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "thief"}}, csrKey)
	code, m = cp.do("POST", "/api/v1/agent/certificate", tok, map[string]any{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	if code != 409 || !strings.Contains(m["message"].(string), "already issued") {
		t.Errorf("second enrollment: %d %v", code, m)
	}
}

func TestMTLSNeedsTLS(t *testing.T) {
	err := control.Run(context.Background(), control.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", AgentMTLS: true, Stdout: &syncBuf{}})
	if err == nil || !strings.Contains(err.Error(), "needs the control plane to serve HTTPS") {
		t.Fatalf("Run: %v", err)
	}
}
