package tlsca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}
func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func testCA(t testing.TB) (*CA, *fakeClock, string) {
	t.Helper()
	dir := t.TempDir()
	clk := newFakeClock()
	ca, err := LoadOrCreate(dir, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return ca, clk, dir
}

func TestLoadOrCreateFiles(t *testing.T) {
	ca, clk, dir := testCA(t)
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Join(dir, "ca"), 0o700 | os.ModeDir},
		{filepath.Join(dir, "ca", "ca.crt"), 0o644},
		{filepath.Join(dir, "ca", "ca.key"), 0o600},
	} {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, st.Mode(), f.mode)
		}
	}
	cert := ca.Certificate()
	if !cert.IsCA || !cert.BasicConstraintsValid {
		t.Error("not a CA certificate")
	}
	if !strings.HasPrefix(cert.Subject.CommonName, "Cagent data plane CA ") || len(cert.Subject.CommonName) != len("Cagent data plane CA ")+8 {
		t.Errorf("CN %q", cert.Subject.CommonName)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", cert.PublicKey)
	}
	if len(cert.PermittedDNSDomains)+len(cert.ExcludedDNSDomains)+len(cert.PermittedIPRanges) != 0 || cert.PermittedDNSDomainsCritical {
		t.Error("name constraints set")
	}
	if got, want := cert.NotAfter.Sub(clk.Now()), caValidity; got != want {
		t.Errorf("validity %v, want %v", got, want)
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("no CertSign key usage")
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "ca", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, ca.CertPEM()) {
		t.Error("CertPEM differs from ca.crt")
	}

	// A second load returns the same CA.
	again, err := LoadOrCreate(dir, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Certificate().Equal(cert) {
		t.Error("reload produced a different CA")
	}
}

func TestLoadOrCreateRefuses(t *testing.T) {
	tests := []struct {
		name    string
		mangle  func(t *testing.T, dir string)
		wantErr string
	}{
		{"group readable key", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, "ca", "ca.key"), 0o640); err != nil {
				t.Fatal(err)
			}
		}, "chmod 600"},
		{"world readable key", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, "ca", "ca.key"), 0o604); err != nil {
				t.Fatal(err)
			}
		}, "accessible by group or others"},
		{"key missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "ca", "ca.key")); err != nil {
				t.Fatal(err)
			}
		}, "key"},
		{"garbage key", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "ca", "ca.key"), []byte("nope"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "no PEM block"},
		{"cert of another key", func(t *testing.T, dir string) {
			other := t.TempDir()
			if _, err := LoadOrCreate(other, nil); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(other, "ca", "ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "ca", "ca.crt"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "does not match its key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, dir := testCA(t)
			tt.mangle(t, dir)
			_, err := LoadOrCreate(dir, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadOrCreateKeyWithoutCert(t *testing.T) {
	ca, _, dir := testCA(t)
	if err := os.Remove(filepath.Join(dir, "ca", "ca.crt")); err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Certificate().PublicKey.(*ecdsa.PublicKey).Equal(ca.Certificate().PublicKey) {
		t.Error("certificate re-created with a different key")
	}
}

func verify(t *testing.T, ca *CA, cert *tls.Certificate, name string, now time.Time) error {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	_, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func TestLeafVerifies(t *testing.T) {
	ca, clk, _ := testCA(t)
	tests := []struct {
		host       string
		verifyName string
		wantErr    bool
	}{
		{"api.example.test", "api.example.test", false},
		{"API.Example.TEST.", "api.example.test", false},
		{"bücher.example", "xn--bcher-kva.example", false},
		{"10.0.5.1", "10.0.5.1", false},
		{"[2001:db8::1]", "2001:db8::1", false},
		{"2001:db8::1", "2001:db8::1", false},
		{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".test", strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".test", false},
		{"", "", true},
		{"bad host", "", true},
		{"a..b", "", true},
		{"-lead.test", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			cert, err := ca.Leaf(tt.host)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := verify(t, ca, cert, tt.verifyName, clk.Now()); err != nil {
				t.Fatalf("verify %s: %v", tt.verifyName, err)
			}
			if err := verify(t, ca, cert, "other.test", clk.Now()); err == nil {
				t.Error("leaf also verifies for other.test")
			}
			if got := cert.Leaf.NotBefore; !got.Equal(clk.Now().Add(-time.Hour)) {
				t.Errorf("NotBefore %v", got)
			}
			if got := cert.Leaf.NotAfter; !got.Equal(clk.Now().Add(7 * 24 * time.Hour)) {
				t.Errorf("NotAfter %v", got)
			}
			if cert.Leaf.IsCA {
				t.Error("leaf is a CA")
			}
		})
	}
}

func TestLeafCache(t *testing.T) {
	ca, clk, _ := testCA(t)
	a, err := ca.Leaf("a.test")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Leaf("A.TEST.")
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("cache miss for the same host")
	}
	// Still cached just before the refresh point...
	clk.Add(leafValidity - refreshBefore - time.Minute)
	if c, _ := ca.Leaf("a.test"); c != a {
		t.Error("refreshed too early")
	}
	// ...and replaced after it, with a leaf valid from now.
	clk.Add(2 * time.Minute)
	c, err := ca.Leaf("a.test")
	if err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Fatal("leaf not refreshed before expiry")
	}
	if err := verify(t, ca, c, "a.test", clk.Now().Add(6*24*time.Hour)); err != nil {
		t.Error(err)
	}
}

func TestLeafCacheBounded(t *testing.T) {
	ca, _, _ := testCA(t)
	ca.SetCacheSize(2)
	first, _ := ca.Leaf("one.test")
	ca.Leaf("two.test")
	ca.Leaf("one.test") // one is now the most recently used
	ca.Leaf("three.test")
	if n := ca.CacheLen(); n != 2 {
		t.Fatalf("cache holds %d, want 2", n)
	}
	if again, _ := ca.Leaf("one.test"); again != first {
		t.Error("most recently used entry was evicted")
	}
	ca.mu.Lock()
	_, two := ca.byHost["two.test"]
	ca.mu.Unlock()
	if two {
		t.Error("least recently used entry kept")
	}
}

func TestLeafConcurrent(t *testing.T) {
	ca, _, _ := testCA(t)
	const n = 32
	hosts := []string{"x.test", "y.test", "10.1.2.3"}
	results := make([][]*tls.Certificate, len(hosts))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for h := range hosts {
		results[h] = make([]*tls.Certificate, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c, err := ca.Leaf(hosts[h])
				if err != nil {
					t.Error(err)
				}
				results[h][i] = c
			}()
		}
	}
	close(start)
	wg.Wait()
	for h := range hosts {
		for i := range n {
			if results[h][i] != results[h][0] {
				t.Fatalf("%s: concurrent first calls generated more than one leaf", hosts[h])
			}
		}
	}
}

// handshake runs a real TLS handshake over loopback TCP.
func handshake(t *testing.T, srv *tls.Config, cli *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		s := tls.Server(c, srv)
		done <- s.HandshakeContext(context.Background())
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, cli)
	err = tc.HandshakeContext(context.Background())
	st := tc.ConnectionState()
	tc.Close()
	serr := <-done
	if err == nil {
		err = serr
	}
	return st, err
}

func TestServerTLSConfig(t *testing.T) {
	ca, clk, _ := testCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())

	st, err := handshake(t, ca.ServerTLSConfig(), &tls.Config{Time: clk.Now, RootCAs: pool, ServerName: "api.example.test", NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", st.NegotiatedProtocol)
	}
	if got := st.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "api.example.test" {
		t.Errorf("leaf names %v", got)
	}

	// No SNI: refused by ServerTLSConfig...
	if _, err := handshake(t, ca.ServerTLSConfig(), &tls.Config{Time: clk.Now, RootCAs: pool, InsecureSkipVerify: true}); err == nil {
		t.Error("handshake without SNI succeeded")
	}
	// ...and served for the known destination by TLSConfigForHost (Go sends no
	// SNI for an IP ServerName, and verifies the IP SAN).
	if _, err := handshake(t, ca.TLSConfigForHost("10.0.5.1"), &tls.Config{Time: clk.Now, RootCAs: pool, ServerName: "10.0.5.1"}); err != nil {
		t.Errorf("IP literal: %v", err)
	}
	// An agent that does not trust the CA fails verification.
	var uerr x509.UnknownAuthorityError
	if _, err := handshake(t, ca.ServerTLSConfig(), &tls.Config{Time: clk.Now, RootCAs: x509.NewCertPool(), ServerName: "a.test"}); !errors.As(err, &uerr) {
		t.Errorf("untrusted CA: err = %v", err)
	}
}

func FuzzLeafHost(f *testing.F) {
	for _, s := range []string{"a.test", "10.0.0.1", "[::1]", "bücher.example", "", ".", "a..b", "x_y.test", "fe80::1%eth0", "A.B.C."} {
		f.Add(s)
	}
	ca, clk, _ := testCA(f)
	f.Fuzz(func(t *testing.T, host string) {
		cert, err := ca.Leaf(host)
		if err != nil {
			return
		}
		name, _, err := NormalizeLeafHost(host)
		if err != nil {
			t.Fatalf("Leaf accepted %q that NormalizeLeafHost refuses", host)
		}
		if err := verify(t, ca, cert, name, clk.Now()); err != nil {
			t.Fatalf("leaf for %q does not verify as %q: %v", host, name, err)
		}
	})
}

func BenchmarkLeafCacheHit(b *testing.B) {
	ca, _, _ := testCA(b)
	if _, err := ca.Leaf("api.example.test"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ca.Leaf("api.example.test"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkLeafMiss(b *testing.B) {
	ca, _, _ := testCA(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ca.mu.Lock()
		clear(ca.byHost)
		ca.lru.Init()
		ca.mu.Unlock()
		if _, err := ca.Leaf("api.example.test"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentCreate: several processes starting at once (cagent up and
// cagent ca export) must end up with one CA, the one on disk.
func TestConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	cas := make([]*CA, 6)
	var wg sync.WaitGroup
	for i := range cas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ca, err := LoadOrCreate(dir, nil)
			if err != nil {
				t.Error(err)
			}
			cas[i] = ca
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	onDisk, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, ca := range cas {
		if !ca.Certificate().Equal(onDisk.Certificate()) {
			t.Errorf("instance %d uses a CA that is not the one on disk", i)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "ca"))
	if len(entries) != 2 {
		t.Errorf("ca dir holds %d entries, want ca.crt and ca.key only", len(entries))
	}
}
