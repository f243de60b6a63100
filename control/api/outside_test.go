package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control/agentca"
	"github.com/cagent-dev/cagent/control/api"
	"github.com/cagent-dev/cagent/control/store"
	"github.com/coder/websocket"
)

// mountAll points e at everything the control plane serves under /api/
// (Mount: the route table, the stream, enrolment) and returns the patterns
// served outside the route table.
func mountAll(t testing.TB, e *env) []string {
	t.Helper()
	hub := api.NewHub()
	ca, err := agentca.LoadOrCreate(t.TempDir(), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	outside := e.srv.Mount(mux, hub, api.StreamOptions{}, ca)
	e.hs = httptest.NewServer(mux)
	t.Cleanup(func() { hub.Close(); e.hs.Close() })
	return outside
}

func newCSR(t testing.TB) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "chosen-by-the-caller"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestOutsideRoutesAuthorization is the authorization matrix of the two
// routes served outside the route table: only agent tokens; every other
// kind refused with 403, no token 401; and since the agent is the token's
// (nothing in the request names one), another tenant's agent cannot be
// reached: the stream carries the caller's own state and the certificate
// names the caller's own agent, whatever the request says.
func TestOutsideRoutesAuthorization(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		mountAll(t, e)
		for _, rt := range e.srv.OutsideRoutes() {
			if rt.Pattern == api.TerminalPattern {
				// People's terminal, authorized by a ticket (terminal_test.go).
				if !slices.Equal(rt.Kinds, readers) {
					t.Errorf("%s %s allows %v, want %v", rt.Method, rt.Pattern, rt.Kinds, readers)
				}
				continue
			}
			if !slices.Equal(rt.Kinds, agentK) {
				t.Errorf("%s %s allows %v, want agent tokens only", rt.Method, rt.Pattern, rt.Kinds)
			}
		}
		a, b := matrixTenant(e, "alpha"), matrixTenant(e, "beta")
		rc := newResponseChecker(t, e)
		wsURL := "ws" + strings.TrimPrefix(e.hs.URL, "http") + wire.Path
		dial := func(tok, query string) (*websocket.Conn, int) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h := http.Header{}
			if tok != "" {
				h.Set("Authorization", "Bearer "+tok)
			}
			c, res, err := websocket.Dial(ctx, wsURL+query, &websocket.DialOptions{HTTPHeader: h})
			if err != nil {
				if res == nil {
					t.Fatalf("dial: %v", err)
				}
				return nil, res.StatusCode
			}
			c.SetReadLimit(wire.MaxMessage)
			t.Cleanup(func() { c.CloseNow() })
			return c, http.StatusSwitchingProtocols
		}
		for _, kind := range kinds {
			tok := e.super
			if kind != store.KindSuperadmin {
				tok = a.token(kind)
			}
			want := http.StatusForbidden
			if kind == store.KindAgent {
				want = http.StatusSwitchingProtocols
			}
			if _, got := dial(tok, ""); got != want {
				t.Errorf("stream as %s: %d, want %d", kind, got, want)
			}
			// A plain GET (no upgrade) by a refused kind gets the
			// documented JSON error.
			if kind != store.KindAgent {
				r := e.do("GET", wire.Path, tok, nil)
				if r.status != http.StatusForbidden {
					t.Errorf("plain GET stream as %s: %d", kind, r.status)
				}
				if err := rc.check("GET", wire.Path, r); err != nil {
					t.Errorf("stream as %s: %v", kind, err)
				}
				r = e.do("POST", api.EnrollPath, tok, map[string]any{"csr": newCSR(t)})
				if r.status != http.StatusForbidden {
					t.Errorf("enrol as %s: %d %s", kind, r.status, r.body)
				}
				if err := rc.check("POST", api.EnrollPath, r); err != nil {
					t.Errorf("enrol as %s: %v", kind, err)
				}
			}
		}
		if _, got := dial("", ""); got != http.StatusUnauthorized {
			t.Errorf("stream without token: %d", got)
		}
		if r := e.do("POST", api.EnrollPath, "", map[string]any{"csr": newCSR(t)}); r.status != http.StatusUnauthorized {
			t.Errorf("enrol without token: %d", r.status)
		}

		// Naming the other tenant's agent changes nothing: alpha's agent
		// gets alpha's state, never beta's secret.
		c, got := dial(a.agent, "?agent_id="+b.agentID+"&tenant="+b.id)
		if got != http.StatusSwitchingProtocols {
			t.Fatalf("stream as agent: %d", got)
		}
		st := readType(t, c, wire.TypeState)
		if st.Secrets["key-alpha"] != "value-of-alpha" || strings.Contains(st.PolicyYAML, "beta") {
			t.Fatalf("alpha's agent got %+v", st)
		}
		for _, v := range st.Secrets {
			if strings.Contains(v, "beta") {
				t.Fatalf("alpha's agent got beta's secret: %+v", st.Secrets)
			}
		}

		r := e.do("POST", api.EnrollPath+"?agent_id="+b.agentID, a.agent, map[string]any{"csr": newCSR(t)})
		if r.status != http.StatusCreated {
			t.Fatalf("enrol as agent: %d %s", r.status, r.body)
		}
		if err := rc.check("POST", api.EnrollPath, r); err != nil {
			t.Errorf("enrol: %v", err)
		}
		blk, _ := pem.Decode([]byte(r.json(t)["certificate"].(string)))
		if blk == nil {
			t.Fatalf("certificate: %s", r.body)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.Subject.CommonName != a.agentID || strings.Contains(cert.Subject.String(), b.agentID) || strings.Contains(cert.Subject.String(), b.id) {
			t.Fatalf("alpha's agent got a certificate for %s", cert.Subject)
		}
		// Once per agent.
		if r := e.do("POST", api.EnrollPath, a.agent, map[string]any{"csr": newCSR(t)}); r.status != http.StatusConflict {
			t.Fatalf("second enrolment: %d", r.status)
		}
		// Beta's agent enrols for itself only.
		r = e.do("POST", api.EnrollPath+"?agent_id="+a.agentID, b.agent, map[string]any{"csr": newCSR(t)})
		if r.status != http.StatusCreated {
			t.Fatalf("enrol as beta's agent: %d %s", r.status, r.body)
		}
		blk, _ = pem.Decode([]byte(r.json(t)["certificate"].(string)))
		if cert, err = x509.ParseCertificate(blk.Bytes); err != nil || cert.Subject.CommonName != b.agentID {
			t.Fatalf("beta's certificate: %v %v", cert.Subject, err)
		}
	})
}
