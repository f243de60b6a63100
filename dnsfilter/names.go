package dnsfilter

import (
	"fmt"

	"github.com/cagent-dev/cagent/policy"
)

// wireLabels returns the lengths of the labels of name (presentation format
// as miekg/dns produces it, with \DDD and \X escapes) as they are on the wire,
// and the name's length without the trailing dot. ok is false when the
// escapes are malformed.
func wireLabels(name string, dst []int) (labels []int, nameLen int, ok bool) {
	labels = dst[:0]
	cur := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '\\':
			if i+3 < len(name) && isDigit(name[i+1]) && isDigit(name[i+2]) && isDigit(name[i+3]) {
				i += 3
			} else if i+1 < len(name) {
				i++
			} else {
				return labels, 0, false
			}
			cur++
		case c == '.':
			if cur == 0 {
				// "." alone is the root; an empty label elsewhere is malformed.
				if len(name) == 1 {
					return labels, 0, true
				}
				return labels, 0, false
			}
			labels = append(labels, cur)
			cur = 0
		default:
			cur++
		}
	}
	if cur > 0 {
		labels = append(labels, cur)
	}
	n := 0
	for _, l := range labels {
		n += l + 1
	}
	if n > 0 {
		n-- // no trailing dot
	}
	return labels, n, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// tunnelVerdict is why a name looks like a tunnel; zero when it does not.
type tunnelVerdict struct {
	rule   string // the policy setting that refused it
	reason string // one sentence
}

// checkTunnel applies the per-name tunnelling heuristics of t to name (the
// query name as miekg/dns presents it) and to its normalized form host
// ("" when the name is not a valid host name).
func checkTunnel(name, host string, t *policy.Tunneling) (tunnelVerdict, bool) {
	var buf [16]int
	labels, n, ok := wireLabels(name, buf[:])
	if !ok {
		return tunnelVerdict{}, false
	}
	if n > t.MaxNameLength {
		return tunnelVerdict{
			rule:   "dns.tunneling.max_name_length",
			reason: fmt.Sprintf("name is %d characters long, over the limit of %d (possible DNS tunnelling)", n, t.MaxNameLength),
		}, true
	}
	for _, l := range labels {
		if l > t.MaxLabelLength {
			return tunnelVerdict{
				rule:   "dns.tunneling.max_label_length",
				reason: fmt.Sprintf("a label is %d characters long, over the limit of %d (possible DNS tunnelling)", l, t.MaxLabelLength),
			}, true
		}
	}
	if host == "" {
		return tunnelVerdict{}, false
	}
	if rule, reason, bad := t.CheckEntropy(host); bad {
		return tunnelVerdict{rule: rule, reason: reason}, true
	}
	return tunnelVerdict{}, false
}
