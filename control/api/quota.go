package api

import (
	"context"
	"net/http"

	"github.com/cagent-dev/cagent/control/store"
)

// Quotas bound the objects one tenant may hold: every tenant shares one
// database, so without them one tenant (or one stolen admin token) could
// fill it for all. Zero fields take the defaults; a negative one means no
// limit. Superadmin tokens (which have no tenant) are not counted.
type Quotas struct {
	Agents   int
	Tokens   int // admin, dev and agent tokens, an agent's own included
	Policies int
	Secrets  int
	ACLs     int
}

// DefaultQuotas are generous: they stop runaway scripts and abuse, not
// any real deployment (raise them in Config.Quotas).
var DefaultQuotas = Quotas{Agents: 10000, Tokens: 20000, Policies: 10000, Secrets: 10000, ACLs: 256}

func (q *Quotas) fill() {
	d := DefaultQuotas
	for _, f := range []struct {
		v   *int
		def int
	}{
		{&q.Agents, d.Agents}, {&q.Tokens, d.Tokens}, {&q.Policies, d.Policies}, {&q.Secrets, d.Secrets}, {&q.ACLs, d.ACLs},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
}

// underQuota refuses (403 quota_exceeded) adding one object of kind to
// tenantID when the tenant already holds its quota. Call it inside the
// creating transaction (st), so that on SQLite, where writers are
// serialized, concurrent creations cannot overshoot.
func (s *Server) underQuota(ctx context.Context, st store.Store, tenantID string, kind store.Countable) error {
	if tenantID == "" {
		return nil
	}
	q := s.cfg.Quotas
	limit, what := 0, ""
	switch kind {
	case store.CountAgents:
		limit, what = q.Agents, "agents"
	case store.CountTokens:
		limit, what = q.Tokens, "tokens"
	case store.CountPolicies:
		limit, what = q.Policies, "policies"
	case store.CountSecrets:
		limit, what = q.Secrets, "secrets"
	case store.CountACLs:
		limit, what = q.ACLs, "IP ACL entries"
	}
	if limit < 0 {
		return nil
	}
	n, err := st.CountTenant(ctx, tenantID, kind)
	if err != nil {
		return err
	}
	if n >= limit {
		return errf(http.StatusForbidden, "quota_exceeded", "the tenant holds %d %s, its quota; delete some first", n, what)
	}
	return nil
}
