package control_test

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
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/control"
	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/control/store/storetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// start runs the control plane and returns its base URL and a stop func.
func start(t *testing.T, cfg control.Config) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	cfg.Listen = "127.0.0.1:0"
	cfg.Ready = func(a net.Addr) { ready <- a }
	errc := make(chan error, 1)
	go func() { errc <- control.Run(ctx, cfg) }()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run returned %v", err)
		}
	}
	t.Cleanup(stop)
	return "http://" + addr.String(), stop
}

func req(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	r, _ := http.NewRequest(method, url, rd)
	r.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

func bootstrapToken(t *testing.T, out string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "cagent_") {
			return l
		}
	}
	t.Fatalf("no bootstrap token in %q", out)
	return ""
}

func TestRunBootstrapKeysAndRotation(t *testing.T) {
	storetest.Each(t, func(t *testing.T, dsn string) {
		dir := t.TempDir()
		var out syncBuf
		cfg := control.Config{DB: dsn, DataDir: dir, Stdout: &out}
		base, stop := start(t, cfg)
		super := bootstrapToken(t, out.String())
		for _, f := range []string{"token.key", "secrets.keyring"} {
			fi, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s mode %v", f, fi.Mode())
			}
		}
		code, m := req(t, "POST", base+"/api/v1/tenants", super, map[string]any{"name": "acme"})
		if code != 201 {
			t.Fatalf("create tenant: %d %v", code, m)
		}
		tp := base + "/api/v1/tenants/" + m["id"].(string)
		_, ag := req(t, "POST", tp+"/agents", super, map[string]any{"name": "box"})
		agentTok := ag["token"].(map[string]any)["token"].(string)
		req(t, "POST", tp+"/policies", super, map[string]any{"entry": map[string]any{"domain": "api.example", "credential": map[string]any{"header": "X-Key", "secret": "k"}}})
		if code, _ := req(t, "PUT", tp+"/secrets/k", super, map[string]any{"value": "v1"}); code != 201 {
			t.Fatalf("put secret: %d", code)
		}
		oldRing, _ := os.ReadFile(filepath.Join(dir, "secrets.keyring"))

		// Rotate while the server runs: it reloads the keyring on demand.
		var rot bytes.Buffer
		if err := control.RotateKey(context.Background(), control.Config{DB: dsn, DataDir: dir}, false, &rot); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rot.String(), "Re-encrypted 1 secrets") {
			t.Fatalf("rotate output %q", rot.String())
		}
		code, s := req(t, "GET", base+"/api/v1/agent/secrets/k", agentTok, nil)
		if code != 200 || s["value"] != "v1" {
			t.Fatalf("secret after rotation: %d %v", code, s)
		}
		stop()

		// Restart: same keys, no second bootstrap token, data intact.
		var out2 syncBuf
		cfg.Stdout = &out2
		base, stop = start(t, cfg)
		if out2.String() != "" {
			t.Fatalf("second start printed %q", out2.String())
		}
		if code, _ := req(t, "GET", base+"/api/v1/whoami", super, nil); code != 200 {
			t.Fatalf("bootstrap token after restart: %d", code)
		}
		code, s = req(t, "GET", base+"/api/v1/agent/secrets/k", agentTok, nil)
		if code != 200 || s["value"] != "v1" {
			t.Fatalf("secret after restart: %d %v", code, s)
		}
		stop()

		// Prune: the old key is gone and everything still opens.
		if err := control.RotateKey(context.Background(), control.Config{DB: dsn, DataDir: dir}, true, io.Discard); err != nil {
			t.Fatal(err)
		}
		ring, _ := os.ReadFile(filepath.Join(dir, "secrets.keyring"))
		if strings.Count(strings.TrimSpace(string(ring)), "\n") != 0 || strings.Contains(string(ring), strings.Fields(string(oldRing))[1]) {
			t.Fatalf("keyring after prune:\n%s", ring)
		}
		st, err := store.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		xs, _ := st.ListAllSecrets(context.Background())
		st.Close()
		if len(xs) != 1 || !strings.Contains(string(ring), xs[0].KeyID+" ") {
			t.Fatalf("secret key id %v not in keyring", xs)
		}
		base, _ = start(t, cfg)
		code, s = req(t, "GET", base+"/api/v1/agent/secrets/k", agentTok, nil)
		if code != 200 || s["value"] != "v1" {
			t.Fatalf("secret after prune: %d %v", code, s)
		}
	})
}

func TestKeysFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(control.EnvTokenKey, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	t.Setenv(control.EnvSecretKeys, "k1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	var out syncBuf
	start(t, control.Config{DataDir: dir, Stdout: &out})
	for _, f := range []string{"token.key", "secrets.keyring"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Fatalf("%s written although the key came from the environment", f)
		}
	}
	t.Setenv(control.EnvSecretKeys, "k1 short")
	err := control.Run(context.Background(), control.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Stdout: io.Discard})
	if err == nil || !strings.Contains(err.Error(), control.EnvSecretKeys) {
		t.Fatalf("bad env key: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []control.Config{
		{DB: "mysql://x"},
		{Listen: "nope"},
		{LogRetention: -time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	c := control.Config{DataDir: "/d"}
	if err := c.Validate(); err != nil || c.DB != "sqlite:/d/control.db" || c.Listen != "127.0.0.1:8090" {
		t.Fatalf("defaults: %+v %v", c, err)
	}
}

func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cp.test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	var out syncBuf
	base, _ := start(t, control.Config{DataDir: dir, Stdout: &out, TLSCert: certFile, TLSKey: keyFile})
	pool := x509.NewCertPool()
	c, _ := x509.ParseCertificate(der)
	pool.AddCert(c)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	res, err := hc.Get(strings.Replace(base, "http://", "https://", 1) + "/api/v1/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if err := control.Run(context.Background(), control.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", TLSCert: keyFile, TLSKey: keyFile, Stdout: io.Discard}); err == nil {
		t.Fatal("bad certificate accepted")
	}
}
