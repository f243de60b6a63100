package api

import (
	"net/http"
	"strings"

	"github.com/cagent-dev/cagent/control/agentca"
	"github.com/cagent-dev/cagent/control/store"
)

// EnrollPath is where a data plane gets its client certificate (mTLS).
const EnrollPath = "/api/v1/agent/certificate"

type enrollReq struct {
	CSR string `json:"csr"`
}

type enrollResp struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// EnrollHandler serves POST /api/v1/agent/certificate: with its agent
// token, a data plane sends a certificate request (its private key never
// leaves it) and gets a client certificate from ca. Each agent enrolls
// once: a second request is 409, so a stolen token cannot get a second
// certificate once the data plane has its own (delete and re-register
// the agent to enroll again).
func (s *Server) EnrollHandler(ca *agentca.CA) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{w: w, r: r, s: s, rid: newRequestID(), client: s.clientAddr(r)}
		w.Header().Set("X-Request-Id", c.rid)
		w.Header().Set("Cache-Control", "no-store")
		if err := s.enroll(c, ca); err != nil {
			c.fail(err)
		}
	})
}

func (s *Server) enroll(c *call, ca *agentca.CA) error {
	r := c.r
	if r.Method != http.MethodPost {
		c.w.Header().Set("Allow", http.MethodPost)
		return errf(http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
	}
	p, err := s.authn(c)
	if err != nil {
		return err
	}
	c.p, c.tenantID = p, p.TenantID
	if p.Kind != store.KindAgent {
		return errForbidden
	}
	if ok, wait := s.allow(p.TokenID); !ok {
		return &apiError{status: http.StatusTooManyRequests, code: "rate_limited", msg: "too many requests for this token; retry later", retry: wait}
	}
	var req enrollReq
	if err := c.decode(&req); err != nil {
		return err
	}
	cert, err := ca.Sign([]byte(req.CSR), p.TenantID, p.AgentID)
	if err != nil {
		return fieldErr("csr", "%v", err)
	}
	err = c.change(func(st store.Store) error {
		first, err := st.SetMetaOnce(r.Context(), "agent_cert:"+p.AgentID, c.rid)
		if err != nil {
			return err
		}
		if !first {
			return errf(http.StatusConflict, "conflict", "a certificate was already issued to this agent; delete and re-register the agent to enroll again")
		}
		return c.audit(st, "agent.certificate", "agent", p.AgentID, map[string]any{"agent_id": p.AgentID})
	})
	if err != nil {
		return err
	}
	return c.ok(http.StatusCreated, enrollResp{Certificate: string(cert), CA: string(ca.CertPEM())})
}

// RequireAgentCert wraps the API so that every agent route (the stream
// and /api/v1/agent/..., except enrollment) needs a verified client
// certificate whose CN is the calling token's agent. The TLS listener
// verifies the chain (ClientCAs, VerifyClientCertIfGiven); this checks it
// is there and bound to the token.
func (s *Server) RequireAgentCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, v1+"/agent/") || r.URL.Path == EnrollPath {
			next.ServeHTTP(w, r)
			return
		}
		c := &call{w: w, r: r, s: s, rid: newRequestID(), client: s.clientAddr(r)}
		p, err := s.authn(c)
		if err == nil {
			err = checkAgentCert(r, p)
		}
		if err != nil {
			w.Header().Set("X-Request-Id", c.rid)
			c.fail(err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func checkAgentCert(r *http.Request, p Principal) error {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return errf(http.StatusForbidden, "client_certificate_required", "this control plane requires agents to present the client certificate it issued (mTLS)")
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if p.Kind != store.KindAgent || leaf.Subject.CommonName != p.AgentID {
		return errf(http.StatusForbidden, "client_certificate_mismatch", "the client certificate was issued to another agent")
	}
	return nil
}
