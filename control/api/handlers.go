package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/policy"
)

type list[T any] struct {
	Items []T `json:"items"`
}

func (c *call) ok(status int, v any) error {
	writeJSON(c.w, status, v)
	return nil
}

func (c *call) decode(v any) *apiError {
	return decodeJSON(c.r.Body, DefaultMaxBody, v)
}

func (c *call) now() time.Time { return c.s.cfg.Now().UTC() }

func (c *call) queryTime(name string) (time.Time, error) {
	v := c.r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return t, fieldErr(name, "use RFC 3339, e.g. 2026-01-02T15:04:05Z")
	}
	if !storable(t) {
		return t, fieldErr(name, "%s", storableMsg)
	}
	return t, nil
}

func (c *call) queryLimit() (int, error) {
	v := c.r.URL.Query().Get("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, fieldErr("limit", "an integer from 1 to 1000")
	}
	return n, nil
}

func (s *Server) healthz(c *call) error {
	return c.ok(http.StatusOK, map[string]string{"status": "ok"})
}

type whoamiResp struct {
	TokenID  string `json:"token_id"`
	Kind     string `json:"kind"`
	TenantID string `json:"tenant_id"`
	AgentID  string `json:"agent_id"`
}

func (s *Server) whoami(c *call) error {
	return c.ok(http.StatusOK, whoamiResp{c.p.TokenID, c.p.Kind, c.p.TenantID, c.p.AgentID})
}

// --- tenants ---

func (s *Server) listTenants(c *call) error {
	ts, err := s.st.ListTenants(c.r.Context())
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, list[store.Tenant]{ts})
}

func (s *Server) createTenant(c *call) error {
	var req createTenantReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	t := store.Tenant{ID: store.NewID(), Name: req.Name, CreatedAt: c.now()}
	err := c.change(func(st store.Store) error {
		if err := st.CreateTenant(c.r.Context(), t); err != nil {
			return err
		}
		return c.audit(st, "tenant.create", "tenant", t.ID, map[string]any{"tenant_id": t.ID, "name": t.Name})
	})
	if errors.Is(err, store.ErrConflict) {
		return errf(http.StatusConflict, "conflict", "a tenant named %q exists", req.Name)
	}
	if err != nil {
		return err
	}
	return c.ok(http.StatusCreated, t)
}

func (s *Server) getTenant(c *call) error {
	t, err := s.st.GetTenant(c.r.Context(), c.tenantID)
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, t)
}

func (s *Server) deleteTenant(c *call) error {
	err := c.change(func(st store.Store) error {
		if err := st.DeleteTenant(c.r.Context(), c.tenantID); err != nil {
			return err
		}
		return c.audit(st, "tenant.delete", "tenant", c.tenantID, nil)
	})
	if err != nil {
		return err
	}
	s.notify(c.tenantID, "")
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- tokens ---

// tokenScope is the tenant a token route works on: "" (superadmin tokens)
// on /api/v1/tokens.
func (c *call) tokenScope() string {
	if c.r.PathValue("tenant") == "" {
		return ""
	}
	return c.tenantID
}

type createdToken struct {
	store.Token
	Plain string `json:"token" desc:"the token itself; shown only in this response"`
}

func (s *Server) listTokens(c *call) error {
	ts, err := s.st.ListTokens(c.r.Context(), c.tokenScope())
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, list[store.Token]{ts})
}

func (s *Server) createToken(c *call) error {
	var req createTokenReq
	if err := c.decode(&req); err != nil {
		return err
	}
	scope := c.tokenScope()
	if err := req.check(c.now(), scope == ""); err != nil {
		return err
	}
	if req.Kind == store.KindAgent {
		a, err := s.st.GetAgent(c.r.Context(), scope, req.AgentID)
		if errors.Is(err, store.ErrNotFound) {
			return fieldErr("agent_id", "no such agent")
		}
		if err != nil {
			return err
		}
		if a.Disabled {
			return fieldErr("agent_id", "agent is disabled")
		}
	}
	var ct createdToken
	err := c.change(func(st store.Store) error {
		var err error
		ct, err = s.mintToken(c, st, scope, req.Kind, req.Name, req.AgentID, req.ExpiresAt)
		return err
	})
	if err != nil {
		return err
	}
	return c.ok(http.StatusCreated, ct)
}

func (s *Server) mintToken(c *call, st store.Store, tenantID, kind, name, agentID string, exp *time.Time) (createdToken, error) {
	k, err := s.cfg.Hasher.NewToken()
	if err != nil {
		return createdToken{}, err
	}
	t := store.Token{ID: k.ID, TenantID: tenantID, Kind: kind, Name: name, AgentID: agentID, Salt: k.Salt, Hash: k.Hash, CreatedAt: c.now()}
	if exp != nil {
		t.ExpiresAt = exp.UTC()
	}
	if err := s.underQuota(c.r.Context(), st, tenantID, store.CountTokens); err != nil {
		return createdToken{}, err
	}
	if err := st.CreateToken(c.r.Context(), t); err != nil {
		return createdToken{}, err
	}
	if err := c.audit(st, "token.create", "token", t.ID, map[string]any{"kind": kind, "name": name, "agent_id": agentID}); err != nil {
		return createdToken{}, err
	}
	return createdToken{Token: t, Plain: k.Plain}, nil
}

func (s *Server) getToken(c *call) error {
	t, err := s.st.GetToken(c.r.Context(), c.tokenScope(), c.r.PathValue("token"))
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, t)
}

func (s *Server) updateToken(c *call) error {
	var req updateTokenReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	d := map[string]any{}
	if req.Disabled != nil {
		d["disabled"] = *req.Disabled
	}
	if req.ExpiresAt != nil {
		d["expires_at"] = req.ExpiresAt.UTC()
	}
	var t store.Token
	err := c.change(func(st store.Store) error {
		var err error
		if t, err = st.UpdateToken(c.r.Context(), c.tokenScope(), c.r.PathValue("token"), req.Disabled, req.ExpiresAt); err != nil {
			return err
		}
		return c.audit(st, "token.update", "token", t.ID, d)
	})
	if err != nil {
		return err
	}
	if t.AgentID != "" {
		s.notify(t.TenantID, t.AgentID)
	}
	return c.ok(http.StatusOK, t)
}

func (s *Server) deleteToken(c *call) error {
	ctx := c.r.Context()
	id := c.r.PathValue("token")
	t, err := s.st.GetToken(ctx, c.tokenScope(), id)
	if err != nil {
		return err
	}
	err = c.change(func(st store.Store) error {
		if err := st.DeleteToken(ctx, c.tokenScope(), id); err != nil {
			return err
		}
		return c.audit(st, "token.delete", "token", id, nil)
	})
	if err != nil {
		return err
	}
	if t.AgentID != "" {
		s.notify(t.TenantID, t.AgentID)
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- agents ---

type createdAgent struct {
	agentView
	Token createdToken `json:"token" desc:"the agent's token; shown only in this response"`
}

type agentView struct {
	store.Agent
	Online bool `json:"online"`
}

func (s *Server) view(a store.Agent) agentView {
	a = s.overlay(a)
	return agentView{Agent: a, Online: !a.Disabled && !a.LastHeartbeat.IsZero() && s.cfg.Now().Sub(a.LastHeartbeat) < s.cfg.OnlineWindow}
}

func (s *Server) listAgents(c *call) error {
	as, err := s.st.ListAgents(c.r.Context(), c.tenantID)
	if err != nil {
		return err
	}
	out := make([]agentView, len(as))
	for i, a := range as {
		out[i] = s.view(a)
	}
	return c.ok(http.StatusOK, list[agentView]{out})
}

func (s *Server) createAgent(c *call) error {
	var req createAgentReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	a := store.Agent{ID: store.NewID(), TenantID: c.tenantID, Name: req.Name, CreatedAt: c.now()}
	// The agent and its token are created together or not at all.
	var tok createdToken
	err := c.change(func(st store.Store) error {
		if err := s.underQuota(c.r.Context(), st, c.tenantID, store.CountAgents); err != nil {
			return err
		}
		if err := st.CreateAgent(c.r.Context(), a); err != nil {
			return err
		}
		if err := c.audit(st, "agent.create", "agent", a.ID, map[string]any{"name": a.Name}); err != nil {
			return err
		}
		var err error
		tok, err = s.mintToken(c, st, c.tenantID, store.KindAgent, a.Name, a.ID, nil)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return errf(http.StatusConflict, "conflict", "an agent named %q exists", req.Name)
	}
	if err != nil {
		return err
	}
	return c.ok(http.StatusCreated, createdAgent{s.view(a), tok})
}

func (s *Server) getAgent(c *call) error {
	a, err := s.st.GetAgent(c.r.Context(), c.tenantID, c.r.PathValue("agent"))
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, s.view(a))
}

func (s *Server) deleteAgent(c *call) error {
	id := c.r.PathValue("agent")
	err := c.change(func(st store.Store) error {
		if err := st.DeleteAgent(c.r.Context(), c.tenantID, id); err != nil {
			return err
		}
		return c.audit(st, "agent.delete", "agent", id, nil)
	})
	if err != nil {
		return err
	}
	s.notify(c.tenantID, id)
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

type policyDoc struct {
	Version int             `json:"version"`
	Domains []policy.Domain `json:"domains"`
}

func (s *Server) writePolicy(c *call, p *policy.Policy) error {
	switch f := c.r.URL.Query().Get("format"); f {
	case "yaml":
		b, err := PolicyYAML(p)
		if err != nil {
			return err
		}
		c.w.Header().Set("Content-Type", "application/yaml")
		c.w.WriteHeader(http.StatusOK)
		_, err = c.w.Write(b)
		return err
	case "", "json":
		return c.ok(http.StatusOK, policyDoc{Version: policy.Version, Domains: p.Domains})
	default:
		return fieldErr("format", "use json or yaml")
	}
}

func (s *Server) getAgentPolicy(c *call) error {
	id := c.r.PathValue("agent")
	if _, err := s.st.GetAgent(c.r.Context(), c.tenantID, id); err != nil {
		return err
	}
	p, err := s.EffectivePolicy(c.r.Context(), c.tenantID, id)
	if err != nil {
		return err
	}
	return s.writePolicy(c, p)
}

// --- commands ---

func (s *Server) listCommands(c *call) error {
	id := c.r.PathValue("agent")
	if _, err := s.st.GetAgent(c.r.Context(), c.tenantID, id); err != nil {
		return err
	}
	n, err := c.queryLimit()
	if err != nil {
		return err
	}
	cs, err := s.st.ListCommands(c.r.Context(), c.tenantID, id, n)
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, list[store.Command]{cs})
}

func (s *Server) createCommand(c *call) error {
	var req commandReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	cmd, err := s.queueCommand(c, c.r.PathValue("agent"), req)
	if err != nil {
		return err
	}
	return c.ok(http.StatusCreated, cmd)
}

// queueCommand queues a command for an agent of the calling tenant.
func (s *Server) queueCommand(c *call, agentID string, req commandReq) (store.Command, error) {
	ctx := c.r.Context()
	a, err := s.st.GetAgent(ctx, c.tenantID, agentID)
	if err != nil {
		return store.Command{}, err
	}
	if a.Disabled {
		return store.Command{}, errf(http.StatusConflict, "agent_disabled", "the agent is disabled")
	}
	cmd := store.Command{ID: store.NewID(), TenantID: c.tenantID, AgentID: a.ID, Kind: req.Command, WipeWorkspace: req.WipeWorkspace,
		Status: store.CmdPending, CreatedBy: c.p.TokenID, CreatedAt: c.now(), UpdatedAt: c.now()}
	err = c.change(func(st store.Store) error {
		if err := st.CreateCommand(ctx, cmd); err != nil {
			return err
		}
		return c.audit(st, "command.create", "command", cmd.ID, map[string]any{"agent_id": a.ID, "command": cmd.Kind, "wipe_workspace": cmd.WipeWorkspace})
	})
	if errors.Is(err, store.ErrConflict) {
		return store.Command{}, errf(http.StatusConflict, "command_pending", "the agent has an unfinished command; wait for its result")
	}
	if err != nil {
		return store.Command{}, err
	}
	s.notify(c.tenantID, a.ID)
	return cmd, nil
}

// --- policies ---

func (s *Server) listPolicies(c *call) error {
	var agent *string
	if q := c.r.URL.Query(); q.Has("agent_id") {
		v := q.Get("agent_id")
		agent = &v
	}
	ps, err := s.st.ListPolicies(c.r.Context(), c.tenantID, agent)
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, list[store.Policy]{ps})
}

// checkWith validates the tenant's policies with p added or replacing its
// old version.
func (s *Server) checkWith(c *call, p store.Policy) error {
	ps, err := s.st.ListPolicies(c.r.Context(), c.tenantID, nil)
	if err != nil {
		return err
	}
	replaced := false
	for i := range ps {
		if ps[i].ID == p.ID {
			ps[i], replaced = p, true
		}
	}
	if !replaced {
		ps = append(ps, p)
	}
	if err := checkPolicies(ps); err != nil {
		var es policy.Errors
		msg := err.Error()
		if errors.As(err, &es) && len(es) > 0 {
			msg = es[0].Msg
		}
		return &apiError{status: http.StatusBadRequest, code: "invalid_policy", field: "entry", msg: "entry: conflicts with the tenant's other entries: " + msg}
	}
	return nil
}

func (s *Server) policyFromReq(c *call, req *policyReq, id string, created time.Time) (store.Policy, error) {
	d, aerr := req.check()
	if aerr != nil {
		return store.Policy{}, aerr
	}
	if req.AgentID != "" {
		if _, err := s.st.GetAgent(c.r.Context(), c.tenantID, req.AgentID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return store.Policy{}, fieldErr("agent_id", "no such agent")
			}
			return store.Policy{}, err
		}
	}
	entry, err := json.Marshal(d)
	if err != nil {
		return store.Policy{}, err
	}
	p := store.Policy{ID: id, TenantID: c.tenantID, AgentID: req.AgentID, Domain: d.Domain, Entry: entry,
		Enabled: req.Enabled == nil || *req.Enabled, CreatedAt: created, UpdatedAt: c.now()}
	return p, s.checkWith(c, p)
}

func (s *Server) createPolicy(c *call) error {
	var req policyReq
	if err := c.decode(&req); err != nil {
		return err
	}
	p, err := s.policyFromReq(c, &req, store.NewID(), c.now())
	if err != nil {
		return err
	}
	err = c.change(func(st store.Store) error {
		if err := s.underQuota(c.r.Context(), st, c.tenantID, store.CountPolicies); err != nil {
			return err
		}
		if err := st.CreatePolicy(c.r.Context(), p); err != nil {
			return err
		}
		return c.audit(st, "policy.create", "policy", p.ID, map[string]any{"domain": p.Domain, "agent_id": p.AgentID, "enabled": p.Enabled})
	})
	if errors.Is(err, store.ErrConflict) {
		return errf(http.StatusConflict, "conflict", "an entry for %s exists at this scope; update it instead", p.Domain)
	}
	if err != nil {
		return err
	}
	s.notify(c.tenantID, p.AgentID)
	return c.ok(http.StatusCreated, p)
}

func (s *Server) getPolicy(c *call) error {
	p, err := s.st.GetPolicy(c.r.Context(), c.tenantID, c.r.PathValue("policy"))
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, p)
}

func (s *Server) updatePolicy(c *call) error {
	old, err := s.st.GetPolicy(c.r.Context(), c.tenantID, c.r.PathValue("policy"))
	if err != nil {
		return err
	}
	var req policyReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.AgentID != old.AgentID {
		return fieldErr("agent_id", "cannot move an entry to another scope; create a new one")
	}
	p, err := s.policyFromReq(c, &req, old.ID, old.CreatedAt)
	if err != nil {
		return err
	}
	err = c.change(func(st store.Store) error {
		var err error
		if p, err = st.UpdatePolicy(c.r.Context(), p); err != nil {
			return err
		}
		return c.audit(st, "policy.update", "policy", p.ID, map[string]any{"domain": p.Domain, "agent_id": p.AgentID, "enabled": p.Enabled})
	})
	if errors.Is(err, store.ErrConflict) {
		return errf(http.StatusConflict, "conflict", "an entry for %s exists at this scope", p.Domain)
	}
	if err != nil {
		return err
	}
	s.notify(c.tenantID, p.AgentID)
	return c.ok(http.StatusOK, p)
}

func (s *Server) deletePolicy(c *call) error {
	p, err := s.st.GetPolicy(c.r.Context(), c.tenantID, c.r.PathValue("policy"))
	if err != nil {
		return err
	}
	err = c.change(func(st store.Store) error {
		if err := st.DeletePolicy(c.r.Context(), c.tenantID, p.ID); err != nil {
			return err
		}
		return c.audit(st, "policy.delete", "policy", p.ID, map[string]any{"domain": p.Domain, "agent_id": p.AgentID})
	})
	if err != nil {
		return err
	}
	s.notify(c.tenantID, p.AgentID)
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- secrets ---

func secretName(c *call) (string, error) {
	n := c.r.PathValue("name")
	if !secretNameRE.MatchString(n) {
		return "", fieldErr("name", "use 1-128 of A-Z, a-z, 0-9, '_', '.', '-'")
	}
	return n, nil
}

func (s *Server) listSecrets(c *call) error {
	xs, err := s.st.ListSecrets(c.r.Context(), c.tenantID)
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, list[store.Secret]{xs})
}

func (s *Server) sealed(c *call, name string, req *secretReq) (store.Secret, error) {
	kid, sealed, err := s.seal(c.tenantID, name, []byte(*req.Value))
	if err != nil {
		return store.Secret{}, err
	}
	return store.Secret{ID: store.NewID(), TenantID: c.tenantID, Name: name, KeyID: kid, Sealed: sealed, CreatedAt: c.now(), UpdatedAt: c.now()}, nil
}

func (s *Server) putSecret(c *call) error {
	name, err := secretName(c)
	if err != nil {
		return err
	}
	var req secretReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	x, err := s.sealed(c, name, &req)
	if err != nil {
		return err
	}
	status := http.StatusOK
	err = c.change(func(st store.Store) error {
		// Only a new name counts against the quota; replacing one does not.
		if _, err := st.GetSecret(c.r.Context(), c.tenantID, name); errors.Is(err, store.ErrNotFound) {
			if err := s.underQuota(c.r.Context(), st, c.tenantID, store.CountSecrets); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		var created bool
		var err error
		if x, created, err = st.PutSecret(c.r.Context(), x); err != nil {
			return err
		}
		action := "secret.update"
		if created {
			status, action = http.StatusCreated, "secret.create"
		}
		return c.audit(st, action, "secret", name, map[string]any{"version": x.Version})
	})
	if err != nil {
		return err
	}
	s.notify(c.tenantID, "")
	return c.ok(status, x)
}

func (s *Server) rotateSecret(c *call) error {
	name, err := secretName(c)
	if err != nil {
		return err
	}
	var req secretReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	x, err := s.sealed(c, name, &req)
	if err != nil {
		return err
	}
	err = c.change(func(st store.Store) error {
		var err error
		if x, err = st.ReplaceSecret(c.r.Context(), x); err != nil {
			return err
		}
		return c.audit(st, "secret.rotate", "secret", name, map[string]any{"version": x.Version})
	})
	if err != nil {
		return err
	}
	s.notify(c.tenantID, "")
	return c.ok(http.StatusOK, x)
}

func (s *Server) deleteSecret(c *call) error {
	name, err := secretName(c)
	if err != nil {
		return err
	}
	err = c.change(func(st store.Store) error {
		if err := st.DeleteSecret(c.r.Context(), c.tenantID, name); err != nil {
			return err
		}
		return c.audit(st, "secret.delete", "secret", name, nil)
	})
	if err != nil {
		return err
	}
	s.notify(c.tenantID, "")
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- IP ACLs ---

func (s *Server) listACLs(c *call) error {
	as, err := s.st.ListACLs(c.r.Context(), c.tenantID)
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, list[store.ACL]{as})
}

func (s *Server) createACL(c *call) error {
	var req aclReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	a := store.ACL{ID: store.NewID(), TenantID: c.tenantID, CIDR: req.CIDR, Description: req.Description, CreatedAt: c.now()}
	err := c.change(func(st store.Store) error {
		if err := s.underQuota(c.r.Context(), st, c.tenantID, store.CountACLs); err != nil {
			return err
		}
		if err := st.CreateACL(c.r.Context(), a); err != nil {
			return err
		}
		return c.audit(st, "ip_acl.create", "ip_acl", a.ID, map[string]any{"cidr": a.CIDR})
	})
	if err != nil {
		return err
	}
	return c.ok(http.StatusCreated, a)
}

func (s *Server) deleteACL(c *call) error {
	id := c.r.PathValue("acl")
	err := c.change(func(st store.Store) error {
		if err := st.DeleteACL(c.r.Context(), c.tenantID, id); err != nil {
			return err
		}
		return c.audit(st, "ip_acl.delete", "ip_acl", id, nil)
	})
	if err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- audit and logs ---

func (s *Server) queryAudit(c *call) error {
	q := c.r.URL.Query()
	f := store.AuditFilter{TenantID: c.tenantID, ActorID: q.Get("actor"), Action: q.Get("action"), ObjectType: q.Get("object_type"), ObjectID: q.Get("object_id")}
	if c.r.PathValue("tenant") == "" {
		f.AllTenants, f.TenantID = true, q.Get("tenant_id")
	}
	var err error
	if f.Since, err = c.queryTime("since"); err != nil {
		return err
	}
	if f.Until, err = c.queryTime("until"); err != nil {
		return err
	}
	if f.Limit, err = c.queryLimit(); err != nil {
		return err
	}
	es, err := s.st.QueryAudit(c.r.Context(), f)
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, list[store.AuditEntry]{es})
}

func (s *Server) queryLogs(c *call) error {
	q := c.r.URL.Query()
	f := store.LogFilter{TenantID: c.tenantID, AgentID: q.Get("agent_id"), Type: q.Get("type"), Contains: q.Get("q")}
	if len(f.Contains) > 256 {
		return fieldErr("q", "at most 256 bytes")
	}
	var err error
	if f.Since, err = c.queryTime("since"); err != nil {
		return err
	}
	if f.Until, err = c.queryTime("until"); err != nil {
		return err
	}
	if f.Limit, err = c.queryLimit(); err != nil {
		return err
	}
	es, err := s.st.QueryLogs(c.r.Context(), f)
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, list[store.LogEntry]{es})
}

// --- agent endpoints: the calling agent only ---

func (s *Server) agentPolicy(c *call) error {
	p, err := s.EffectivePolicy(c.r.Context(), c.p.TenantID, c.p.AgentID)
	if err != nil {
		return err
	}
	if c.r.URL.Query().Get("format") == "" {
		q := c.r.URL.Query()
		q.Set("format", "yaml")
		c.r.URL.RawQuery = q.Encode()
	}
	return s.writePolicy(c, p)
}

type agentSecretResp struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Version int    `json:"version"`
}

func (s *Server) agentSecret(c *call) error {
	name, err := secretName(c)
	if err != nil {
		return err
	}
	v, ver, err := s.AgentSecret(c.r.Context(), c.p.TenantID, c.p.AgentID, name)
	if err != nil {
		return err
	}
	return c.ok(http.StatusOK, agentSecretResp{Name: name, Value: v, Version: ver})
}

type heartbeatResp struct {
	Command *store.Command `json:"command"`
}

func (s *Server) heartbeat(c *call) error {
	var req heartbeatReq
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	ctx := c.r.Context()
	now := c.now()
	s.bufferHeartbeat(store.HeartbeatUpdate{TenantID: c.p.TenantID, AgentID: c.p.AgentID, At: now, Status: req.Status, Metrics: req.Metrics})
	for _, r := range req.Results {
		err := c.change(func(st store.Store) error {
			if err := st.CompleteCommand(ctx, c.p.TenantID, c.p.AgentID, r.ID, r.Status, r.Result, now); err != nil {
				return err
			}
			return c.audit(st, "command.result", "command", r.ID, map[string]any{"agent_id": c.p.AgentID, "status": r.Status})
		})
		if errors.Is(err, store.ErrNotFound) {
			continue // unknown, another agent's, or already finished
		}
		if err != nil {
			return err
		}
	}
	var cmd *store.Command
	if c.p.openCommand {
		var err error
		if cmd, err = s.NextCommand(c.r.Context(), c.p.TenantID, c.p.AgentID); err != nil {
			return err
		}
	}
	return c.ok(http.StatusOK, heartbeatResp{Command: cmd})
}

// NextCommand returns the agent's unfinished command (marking it
// delivered), or nil. A future streaming endpoint calls this too.
func (s *Server) NextCommand(ctx context.Context, tenantID, agentID string) (*store.Command, error) {
	return s.st.NextCommand(ctx, tenantID, agentID, s.cfg.Now().UTC())
}

type acceptedResp struct {
	Accepted int `json:"accepted"`
}

func (s *Server) ingestLogs(c *call) error {
	var req logsReq
	if err := decodeJSON(c.r.Body, s.cfg.MaxLogBody, &req); err != nil {
		return err
	}
	es, err := req.check(s.cfg.MaxLogBatch, c.p.TenantID, c.p.AgentID, c.now())
	if err != nil {
		return err
	}
	if err := s.st.InsertLogs(c.r.Context(), es); err != nil {
		return err
	}
	return c.ok(http.StatusAccepted, acceptedResp{Accepted: len(es)})
}
