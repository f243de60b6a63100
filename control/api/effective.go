package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/policy"
	"gopkg.in/yaml.v3"
)

// mergeEntries combines tenant-wide and per-agent entries for agentID: an
// enabled per-agent entry replaces the tenant-wide one for the same domain.
// Entries of other agents and disabled entries are ignored.
func mergeEntries(ps []store.Policy, agentID string) ([]policy.Domain, error) {
	byDomain := map[string]store.Policy{}
	for _, p := range ps {
		if !p.Enabled || (p.AgentID != "" && p.AgentID != agentID) {
			continue
		}
		if cur, ok := byDomain[p.Domain]; ok && cur.AgentID != "" && p.AgentID == "" {
			continue
		}
		byDomain[p.Domain] = p
	}
	names := make([]string, 0, len(byDomain))
	for d := range byDomain {
		names = append(names, d)
	}
	sort.Strings(names)
	out := make([]policy.Domain, 0, len(names))
	for _, n := range names {
		var d policy.Domain
		if err := json.Unmarshal(byDomain[n].Entry, &d); err != nil {
			return nil, fmt.Errorf("policy %s: %w", byDomain[n].ID, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// EffectivePolicy returns the validated policy an agent runs: the tenant's
// enabled entries with the agent's own entries overriding them. It reads
// only rows of tenantID. A future streaming endpoint calls this too.
func (s *Server) EffectivePolicy(ctx context.Context, tenantID, agentID string) (*policy.Policy, error) {
	ps, err := s.st.PoliciesForAgent(ctx, tenantID, agentID)
	if err != nil {
		return nil, err
	}
	ds, err := mergeEntries(ps, agentID)
	if err != nil {
		return nil, err
	}
	// Rows stored before host credential sources were refused (or written
	// by hand) never reach a data plane: fail closed for those domains.
	kept := ds[:0]
	for i := range ds {
		if hostCredentialErr(&ds[i]) != nil {
			s.log.Error("stored policy entry takes its credential from the data plane's host; left out", "tenant", tenantID, "agent", agentID, "domain", ds[i].Domain)
			continue
		}
		kept = append(kept, ds[i])
	}
	ds = kept
	p := &policy.Policy{Domains: ds}
	if err := p.Validate(); err != nil {
		// Entries were valid when written; a newer policy package may be
		// stricter. Leave out entries that no longer validate on their own
		// (fail closed for those domains) rather than failing the agent.
		keep := []policy.Domain{}
		for _, d := range ds {
			one := policy.Policy{Domains: []policy.Domain{d}}
			if one.Validate() != nil {
				s.log.Error("stored policy entry no longer valid; left out", "tenant", tenantID, "agent", agentID, "domain", d.Domain)
				continue
			}
			keep = append(keep, d)
		}
		p = &policy.Policy{Domains: keep}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("effective policy of agent %s: %w", agentID, err)
		}
	}
	return p, nil
}

// PolicyYAML renders the domains of p as a policy file that policy.Parse
// accepts. Fields at their zero value are left out.
func PolicyYAML(p *policy.Policy) ([]byte, error) {
	// JSON first: its omitempty tags drop zero fields, and Duration and Size
	// marshal to the strings the YAML parser reads back.
	js, err := json.Marshal(struct {
		Version int             `json:"version"`
		Domains []policy.Domain `json:"domains"`
	}{policy.Version, p.Domains})
	if err != nil {
		return nil, err
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("# Effective policy exported by the cagent control plane.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(jsonNumbers(m)); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// jsonNumbers turns json.Number into int64 or float64 so YAML prints them
// as plain numbers.
func jsonNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = jsonNumbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// referencedSecrets lists the secret names the policy's credentials use.
func referencedSecrets(p *policy.Policy) map[string]bool {
	out := map[string]bool{}
	for _, d := range p.Domains {
		if d.Credential != nil && d.Credential.Secret != "" && d.IsEnabled() {
			out[d.Credential.Secret] = true
		}
	}
	return out
}

// AgentSecret returns the value of secret name if the agent's effective
// policy references it; otherwise store.ErrNotFound.
func (s *Server) AgentSecret(ctx context.Context, tenantID, agentID, name string) (string, int, error) {
	p, err := s.EffectivePolicy(ctx, tenantID, agentID)
	if err != nil {
		return "", 0, err
	}
	if !referencedSecrets(p)[name] {
		return "", 0, store.ErrNotFound
	}
	x, err := s.st.GetSecret(ctx, tenantID, name)
	if err != nil {
		return "", 0, err
	}
	v, err := s.open(x)
	if err != nil {
		return "", 0, err
	}
	return string(v), x.Version, nil
}

// SecretAAD binds a sealed secret to its tenant and name.
func SecretAAD(tenantID, name string) []byte {
	return []byte("cagent-secret\x00" + tenantID + "\x00" + name)
}

// checkPolicies validates, for every agent of the tenant and for the
// tenant-wide set alone, the policy that the entries would produce, so that
// a write cannot make an agent's effective policy invalid (e.g. two entries
// claiming one alias).
func checkPolicies(ps []store.Policy) error {
	agents := map[string]bool{"": true}
	for _, p := range ps {
		agents[p.AgentID] = true
	}
	for a := range agents {
		ds, err := mergeEntries(ps, a)
		if err != nil {
			return err
		}
		pol := policy.Policy{Domains: ds}
		if err := pol.Validate(); err != nil {
			return err
		}
	}
	return nil
}
