package agentca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func csrPEM(t *testing.T) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignNamesTheAgentAndVerifies(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A second load (another replica) gets the same CA.
	ca2, err := LoadOrCreate(dir, nil)
	if err != nil || string(ca2.CertPEM()) != string(ca.CertPEM()) {
		t.Fatalf("reload: %v", err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "agent-ca.key"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode())
	}
	out, err := ca.Sign(csrPEM(t), "tenant-1", "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(out)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "agent-1" || cert.Subject.Organization[0] != "tenant-1" {
		t.Fatalf("subject %v: the CSR's own name must be ignored", cert.Subject)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("a client certificate verifies as a server certificate")
	}
}

func TestSignRefusesBadRequests(t *testing.T) {
	ca, err := LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	good := csrPEM(t)
	b, _ := pem.Decode(good)
	b.Bytes[len(b.Bytes)-3] ^= 0xff // breaks the signature
	for name, in := range map[string][]byte{
		"empty":          nil,
		"not pem":        []byte("hello"),
		"wrong type":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"bad signature":  pem.EncodeToMemory(b),
		"garbage in pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ca.Sign(in, "t", "a"); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestKeyReadableByOthersRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, nil); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "agent-ca.key"), 0o644)
	if _, err := LoadOrCreate(dir, nil); err == nil {
		t.Fatal("a world-readable CA key was accepted")
	}
}
