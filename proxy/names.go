package proxy

import (
	"sync"
	"time"

	"github.com/cagent-dev/cagent/policy"
)

const codeTunneling = "dns_tunneling_suspected"

// nameWindow is the rolling window of the distinct-names budget.
const nameWindow = time.Hour

// nameBudget counts the distinct names the proxy resolved through each
// wildcard entry in the last hour. The proxy resolves names itself, so
// without it "GET http://<data>.allowed-wildcard/" would carry data to the
// zone's name servers past the DNS filter's budget. It is keyed by the
// policy entry, not the registered domain, so memory is bounded by the
// policy: entries × dns.tunneling.distinct_names_per_hour names.
type nameBudget struct {
	mu   sync.Mutex
	sets map[string]map[string]time.Time // entry -> name -> last asked
}

func newNameBudget() *nameBudget { return &nameBudget{sets: map[string]map[string]time.Time{}} }

// admit records name under entry at now; a new name is admitted only while
// fewer than limit names are in the window. limit < 0 admits everything.
func (b *nameBudget) admit(entry, name string, limit int, now time.Time) bool {
	if limit < 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sets[entry]
	if s == nil {
		s = map[string]time.Time{}
		b.sets[entry] = s
	}
	if _, ok := s[name]; !ok && len(s) >= limit {
		for n, at := range s {
			if now.Sub(at) >= nameWindow {
				delete(s, n)
			}
		}
		if len(s) >= limit {
			return false
		}
	}
	s[name] = now
	return true
}

// checkName holds a name the proxy is about to resolve for a wildcard entry
// to the DNS filter's tunnelling limits (design.md section 5:
// dns_tunneling_suspected). Exactly listed names are the operator's choice
// and are not checked.
func (p *Proxy) checkName(pol *policy.Policy, d *dest) *denial {
	if d.entry == nil || d.alias || d.auth.ip.IsValid() || d.auth.host == d.entry.Domain {
		return nil
	}
	t := &pol.DNS.Tunneling
	if rule, reason, bad := t.CheckHost(d.auth.host); bad {
		return deny(codeTunneling, 403, rule, "%s", reason)
	}
	if !p.names.admit(d.entry.Domain, d.auth.host, t.DistinctNames, p.clock()) {
		return deny(codeTunneling, 403, "dns.tunneling.distinct_names_per_hour",
			"more than %d distinct names under %s in the last hour (possible DNS tunnelling); names already used still work", t.DistinctNames, d.entry.Domain)
	}
	return nil
}
