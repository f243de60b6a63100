package connect

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
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/cagent-dev/cagent/internal/atomicfile"
)

// enrollPath is the control plane's certificate enrollment endpoint.
const enrollPath = "/api/v1/agent/certificate"

// tlsConfig is cfg.TLS plus the data plane's client certificate, enrolling
// for one first if the control plane offers it (https only). A control
// plane without mTLS answers 404 and the connection goes on without one.
func (c *Client) tlsConfig(ctx context.Context) *tls.Config {
	u, _ := url.Parse(c.cfg.URL)
	if u.Scheme != "https" {
		return c.cfg.TLS
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.cfg.TLS != nil {
		conf = c.cfg.TLS.Clone()
	}
	cert, err := c.clientCert(ctx, conf)
	if err != nil {
		c.log.Warn("client certificate (mTLS)", "err", err)
	}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return conf
}

func (c *Client) clientCert(ctx context.Context, conf *tls.Config) (*tls.Certificate, error) {
	keyPath, certPath := filepath.Join(c.dir, "client.key"), filepath.Join(c.dir, "client.pem")
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return &cert, nil
	}
	if c.noEnroll.Load() {
		return nil, nil
	}
	// The key is made and kept here; only a request leaves.
	keyPEM, err := os.ReadFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
		if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, fmt.Errorf("%s: not PEM", keyPath)
	}
	key, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cagent data plane"}}, key)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.cfg.URL, "/")+enrollPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: conf, Proxy: nil}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch resp.StatusCode {
	case http.StatusCreated:
	case http.StatusNotFound:
		c.noEnroll.Store(true) // this control plane does not do mTLS
		return nil, nil
	default:
		return nil, fmt.Errorf("enrollment refused: %s: %s", resp.Status, bytes.TrimSpace(rb))
	}
	var out struct {
		Certificate string `json:"certificate"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	if err := atomicfile.WriteFile(certPath, []byte(out.Certificate), 0o600); err != nil {
		return nil, err
	}
	c.log.Info("enrolled: client certificate issued by the control plane", "path", certPath)
	return &cert, nil
}
