package main

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
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
)

func TestAdminTokenRotate(t *testing.T) {
	state := t.TempDir()
	if _, _, err := runSecretCLI(t, "", "admin", "token", "--state-dir", state); err == nil || !strings.Contains(err.Error(), "--rotate") {
		t.Fatalf("without --rotate: %v", err)
	}
	out, _, err := runSecretCLI(t, "", "admin", "token", "--rotate", "--state-dir", state)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out)
	if !strings.HasPrefix(tok, "cagent_admin_") || len(tok) < 50 {
		t.Fatalf("token %q", tok)
	}
	b, err := os.ReadFile(adminui.TokenPath(state))
	if err != nil || bytes.Contains(b, []byte(tok)) {
		t.Fatalf("token file %q %v", b, err)
	}
	out2, _, _ := runSecretCLI(t, "", "admin", "token", "--rotate", "--state-dir", state)
	if strings.TrimSpace(out2) == tok {
		t.Error("rotate returned the same token")
	}
}

func TestUpServesAdminUIAndCleansUp(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) { testUp(t, useTLS) })
	}
}

// selfSigned writes a certificate for 127.0.0.1 and returns its files and pool.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cagent admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func testUp(t *testing.T, useTLS bool) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "cagent.yaml")
	admin := fmt.Sprintf(`{listen: "%s"}`, addr)
	scheme := "http"
	c := &http.Client{Timeout: 5 * time.Second}
	if useTLS {
		cf, kf, pool := selfSigned(t, dir)
		admin = fmt.Sprintf(`{listen: "%s", tls_cert: %s, tls_key: %s}`, addr, cf, kf)
		scheme = "https"
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	os.WriteFile(cfg, []byte(fmt.Sprintf(`dns: {upstream: [127.0.0.1:5399]}
admin: %s
sandbox: {runtime: runc, workspace: %s/ws, subnet_pool: 10.209.80.0/20}
`, admin, dir)), 0o644)
	root := newRoot()
	var errOut testutil.SyncBuffer
	root.SetArgs([]string{"up", "--config", cfg, "--state-dir", filepath.Join(dir, "state"), "--log-level", "error"})
	root.SetOut(&errOut)
	root.SetErr(&errOut)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	tokRE := regexp.MustCompile(`cagent_admin_[A-Za-z0-9_-]+`)
	var tok string
	deadline := time.Now().Add(30 * time.Second)
	var status struct {
		Components []adminui.ComponentStatus `json:"components"`
	}
	for {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("not up; output:\n%s\nstatus %+v", errOut.String(), status)
		}
		time.Sleep(100 * time.Millisecond)
		if tok == "" {
			tok = tokRE.FindString(errOut.String())
			continue
		}
		resp, err := c.Post(scheme+"://"+addr+"/api/login", "application/json", strings.NewReader(`{"token":"`+tok+`"}`))
		if err != nil {
			continue
		}
		resp.Body.Close()
		req, _ := http.NewRequest("GET", scheme+"://"+addr+"/api/status", nil)
		for _, ck := range resp.Cookies() {
			if ck.Secure != useTLS {
				t.Errorf("cookie Secure=%v with TLS=%v", ck.Secure, useTLS)
			}
			req.AddCookie(ck)
		}
		resp, err = c.Do(req)
		if err != nil {
			continue
		}
		json.NewDecoder(resp.Body).Decode(&status)
		resp.Body.Close()
		running := len(status.Components) == 3
		for _, cs := range status.Components {
			running = running && cs.State == adminui.StateRunning
		}
		if running {
			break
		}
	}
	if !strings.Contains(errOut.String(), "admin UI on "+scheme+"://"+addr) {
		t.Errorf("output %q", errOut.String())
	}
	id := status.Components[0].Info["id"]
	c.CloseIdleConnections()
	if st, err := os.Stat(filepath.Join(dir, "ws")); err != nil || !st.IsDir() {
		t.Errorf("workspace not created: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("up returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("up did not stop")
	}
	if netsetup.Exists("cagent-" + id) {
		t.Errorf("sandbox namespace cagent-%s left", id)
	}
	// The token is printed once.
	if n := len(tokRE.FindAllString(errOut.String(), -1)); n != 1 {
		t.Errorf("token printed %d times", n)
	}
}
