package tlsca

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
)

// TestOpenSSLStrictVerify checks the chain with OpenSSL's strict X.509 mode
// (what Python 3.13's default context enables): key identifiers, critical
// basic constraints, key usage.
func TestOpenSSLStrictVerify(t *testing.T) {
	openssl := testutil.RequireCommand(t, "openssl")
	dir := t.TempDir()
	ca, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"api.example.test", "10.0.5.1"} {
		leaf, err := ca.Leaf(host)
		if err != nil {
			t.Fatal(err)
		}
		leafPath := filepath.Join(dir, "leaf.pem")
		if err := os.WriteFile(leafPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}), 0o600); err != nil {
			t.Fatal(err)
		}
		check := "-verify_hostname"
		if net.ParseIP(host) != nil {
			check = "-verify_ip"
		}
		args := []string{"verify", "-x509_strict", "-purpose", "sslserver", check, host, "-CAfile", filepath.Join(dir, "ca", "ca.crt"), leafPath}
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "OK") {
			t.Errorf("openssl %v: %v\n%s", args, err, out)
		}
		// And it must fail for a name the leaf was not made for.
		args[5] = "other.test"
		if net.ParseIP(host) != nil {
			args[5] = "10.9.9.9"
		}
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err == nil {
			t.Errorf("openssl accepted the leaf for %s:\n%s", args[5], out)
		}
	}
}

// TestCurlThroughInterception has a real HTTPS client (curl) trust the
// exported CA and talk to a loopback server using ServerTLSConfig.
func TestCurlThroughInterception(t *testing.T) {
	curl := testutil.RequireCommand(t, "curl")
	dir := t.TempDir()
	ca, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s %s", r.TLS.ServerName, r.Proto)
		}),
		TLSConfig:         ca.ServerTLSConfig(),
		ErrorLog:          log.New(io.Discard, "", 0), // the refused handshake is expected
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	port := ln.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("https://api.example.test:%d/", port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, "-sS", "--noproxy", "*", "--max-time", "10",
		"--cacert", filepath.Join(dir, "ca", "ca.crt"),
		"--resolve", fmt.Sprintf("api.example.test:%d:127.0.0.1", port), url)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no proxy variables, no SSL_CERT_* overrides
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "hello api.example.test HTTP/1.1" {
		t.Fatalf("curl: %v: %s", err, out)
	}
	// Without the CA, curl refuses the certificate.
	cmd = exec.CommandContext(ctx, curl, "-sS", "--noproxy", "*", "--max-time", "10",
		"--cacert", "/dev/null", "--capath", t.TempDir(),
		"--resolve", fmt.Sprintf("api.example.test:%d:127.0.0.1", port), url)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "certificate") {
		t.Fatalf("curl without the CA: err %v: %s", err, out)
	}
}
