package policy

import "strings"

// LookupNormalized is Lookup for a host already in NormalizeHost's form; it
// skips normalizing again (the DNS filter's hot path has just done it).
func (p *Policy) LookupNormalized(h string) *Domain {
	if p == nil || p.index == nil {
		return nil
	}
	if d := p.index.exact[h]; d != nil {
		return d
	}
	for i := strings.IndexByte(h, '.'); i >= 0; {
		rest := h[i+1:]
		if d := p.index.wildcard[rest]; d != nil {
			return d
		}
		j := strings.IndexByte(rest, '.')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return nil
}
