// Package tlsca is the data plane's TLS interception CA: one ECDSA P-256 CA
// generated per data plane and kept in the state directory, and a bounded
// cache of leaf certificates minted on demand for intercepted hosts.
//
// Files: <state-dir>/ca/ (0700) holds ca.crt (0644, what agents trust; `cagent
// ca export` prints it) and ca.key (0600; refused if group or others can read
// it). The CA has no name constraints, since agents may reach any allowed
// host; the policy check before Leaf is what limits which names get a leaf.
// Leaves are valid for 7 days from an hour ago, with their own P-256 key, and
// are replaced a day before they expire.
package tlsca

import (
	"bytes"
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/cagent-dev/cagent/internal/atomicfile"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/policy"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 7 * 24 * time.Hour
	// Leaves start an hour in the past so a client whose clock lags a little
	// still accepts them.
	backdate = time.Hour
	// A cached leaf is replaced once less than this remains, so a handshake
	// never gets a certificate about to expire mid-connection.
	refreshBefore = 24 * time.Hour
	// DefaultCacheSize bounds the number of cached leaves.
	DefaultCacheSize = 10000
)

// CA is the interception CA. It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
	clock   func() time.Time
	max     int

	mu       sync.Mutex
	lru      *list.List               // front = most recently used; values are *entry
	byHost   map[string]*list.Element // host -> element in lru
	inflight map[string]*call         // host -> leaf being generated
}

type entry struct {
	host     string
	cert     *tls.Certificate
	notAfter time.Time
}

// call is one in-progress leaf generation that concurrent callers wait on.
type call struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// LoadOrCreate loads the CA from <stateDir>/ca/ca.crt and ca.key, creating
// both if neither exists. clock may be nil (time.Now).
func LoadOrCreate(stateDir string, clock func() time.Time) (*CA, error) {
	if clock == nil {
		clock = time.Now
	}
	dir := filepath.Join(stateDir, "ca")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tlsca: create %s: %w", dir, err)
	}
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")

	key, err := loadKey(keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(certPath); err == nil {
			return nil, fmt.Errorf("tlsca: %s exists but its key %s is missing; remove %s to generate a new CA (agents must then trust the new certificate)", certPath, keyPath, certPath)
		}
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("tlsca: generate key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("tlsca: encode key: %w", err)
		}
		created, err := atomicfile.CreateExclusive(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		if err != nil {
			return nil, fmt.Errorf("tlsca: %w", err)
		}
		if !created {
			// Another process (say `cagent ca export` during `cagent up`'s
			// first start) won the race: use its key, so both agree.
			if key, err = loadKey(keyPath); err != nil {
				return nil, err
			}
		}
	case err != nil:
		return nil, err
	}

	cert, certPEM, err := loadCert(certPath, key)
	if errors.Is(err, fs.ErrNotExist) {
		// A key without a certificate: the first run stopped between the
		// two writes. Self-sign again with the same key.
		cert, certPEM, err = createCert(certPath, key, clock())
	}
	if err != nil {
		return nil, err
	}
	return newCA(cert, certPEM, key, clock), nil
}

func newCA(cert *x509.Certificate, certPEM []byte, key *ecdsa.PrivateKey, clock func() time.Time) *CA {
	return &CA{
		cert:     cert,
		certPEM:  certPEM,
		key:      key,
		clock:    clock,
		max:      DefaultCacheSize,
		lru:      list.New(),
		byHost:   make(map[string]*list.Element),
		inflight: make(map[string]*call),
	}
}

// SetCacheSize changes the leaf cache bound (n >= 1). Call it before use.
func (c *CA) SetCacheSize(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.max = max(1, n)
	c.evictLocked()
}

func loadKey(path string) (*ecdsa.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("tlsca: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("tlsca: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("tlsca: CA key %s is accessible by group or others (mode %04o); run chmod 600 %s", path, perm, path)
	}
	data, err := readAll(f, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("tlsca: read %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("tlsca: %s: no PEM block", path)
	}
	var k any
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("tlsca: %s: unexpected PEM block %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("tlsca: %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("tlsca: %s: not an ECDSA key", path)
	}
	return ek, nil
}

func loadCert(path string, key *ecdsa.PrivateKey) (*x509.Certificate, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("tlsca: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("tlsca: %s: no CERTIFICATE PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsca: %s: %w", path, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, nil, fmt.Errorf("tlsca: %s is not a CA certificate", path)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("tlsca: %s does not match its key", path)
	}
	return cert, pem.EncodeToMemory(block), nil
}

func createCert(path string, key *ecdsa.PrivateKey, now time.Time) (*x509.Certificate, []byte, error) {
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, fmt.Errorf("tlsca: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Cagent data plane CA " + hex.EncodeToString(id[:]), Organization: []string{"Cagent"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsca: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsca: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	created, err := atomicfile.CreateExclusive(path, certPEM, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsca: %w", err)
	}
	if !created {
		return loadCert(path, key)
	}
	return cert, certPEM, nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tlsca: serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // never zero
}

// CertPEM returns the CA certificate in PEM form (what agents must trust).
func (c *CA) CertPEM() []byte { return bytes.Clone(c.certPEM) }

// Certificate returns the parsed CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// NormalizeLeafHost returns the cache key for host: an IP literal in its
// canonical form (brackets and zone removed), or a lower-case punycode DNS name.
func NormalizeLeafHost(host string) (name string, ip netip.Addr, err error) {
	if a, ok := policy.ParseIPHost(host); ok {
		return a.WithZone("").String(), a.WithZone(""), nil
	}
	n, err := policy.NormalizeHost(host)
	if err != nil {
		return "", netip.Addr{}, fmt.Errorf("tlsca: %w", err)
	}
	return n, netip.Addr{}, nil
}

// Leaf returns a certificate for host (a DNS name or an IP literal) signed by
// the CA. Leaves are cached; concurrent first calls for one host share one
// generation.
func (c *CA) Leaf(host string) (*tls.Certificate, error) {
	now := c.clock()
	// Fast path: SNI is almost always already in canonical form, and cache
	// keys are only canonical names, so a hit on the raw name is exact.
	c.mu.Lock()
	if cert := c.hitLocked(host, now); cert != nil {
		c.mu.Unlock()
		return cert, nil
	}
	c.mu.Unlock()

	name, ip, err := NormalizeLeafHost(host)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if cert := c.hitLocked(name, now); cert != nil {
		c.mu.Unlock()
		return cert, nil
	}
	if cl, ok := c.inflight[name]; ok {
		c.mu.Unlock()
		<-cl.done
		return cl.cert, cl.err
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[name] = cl
	c.mu.Unlock()

	cl.cert, cl.err = c.mint(name, ip, now)

	c.mu.Lock()
	delete(c.inflight, name)
	if cl.err == nil {
		e := &entry{host: name, cert: cl.cert, notAfter: cl.cert.Leaf.NotAfter}
		if el, ok := c.byHost[name]; ok {
			el.Value = e
			c.lru.MoveToFront(el)
		} else {
			c.byHost[name] = c.lru.PushFront(e)
			c.evictLocked()
		}
	}
	c.mu.Unlock()
	close(cl.done)
	return cl.cert, cl.err
}

// hitLocked returns the cached leaf for name if it is not due for refresh.
func (c *CA) hitLocked(name string, now time.Time) *tls.Certificate {
	el, ok := c.byHost[name]
	if !ok {
		return nil
	}
	e := el.Value.(*entry)
	if !now.Before(e.notAfter.Add(-refreshBefore)) {
		return nil
	}
	c.lru.MoveToFront(el)
	return e.cert
}

func (c *CA) evictLocked() {
	for c.lru.Len() > c.max {
		el := c.lru.Back()
		c.lru.Remove(el)
		delete(c.byHost, el.Value.(*entry).host)
	}
}

// CacheLen returns the number of cached leaves (for metrics and tests).
func (c *CA) CacheLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

func (c *CA) mint(name string, ip netip.Addr, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsca: generate leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(leafValidity)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip.IsValid() {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{name}
	}
	if len(name) <= 64 { // the X.520 upper bound on a common name
		tmpl.Subject = pkix.Name{CommonName: name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("tlsca: sign leaf for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsca: %w", err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, c.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// ServerTLSConfig returns a server configuration that picks the leaf from the
// ClientHello's SNI. A handshake without SNI fails; use TLSConfigForHost when
// the destination is known some other way (CONNECT to an IP literal).
func (c *CA) ServerTLSConfig() *tls.Config { return c.TLSConfigForHost("") }

// TLSConfigForHost is ServerTLSConfig with a fallback name for clients that
// send no SNI (IP-literal destinations). The SNI, when present, still wins so
// the client verifies the name it asked for.
func (c *CA) TLSConfigForHost(fallback string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			host := hello.ServerName
			if host == "" {
				host = fallback
			}
			if host == "" {
				return nil, errors.New("tlsca: client sent no server name (SNI)")
			}
			return c.Leaf(host)
		},
	}
}

func readAll(f *os.File, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}
