package policy

import (
	"fmt"
	"math"
	"strings"
)

// MinEntropyLabel is the shortest label whose entropy is estimated:
// shorter labels carry too few characters for the estimate to mean anything.
const MinEntropyLabel = 16

// CheckHost applies the per-name tunnelling heuristics (label length, name
// length, entropy) to a host in NormalizeHost's form. The proxy uses it for
// names it resolves itself, so that asking the proxy for <data>.allowed-zone
// is held to the same limits as asking the DNS filter. bad is false when the
// name passes; rule names the setting that refused it.
func (t *Tunneling) CheckHost(host string) (rule, reason string, bad bool) {
	if t.MaxNameLength > 0 && len(host) > t.MaxNameLength {
		return "dns.tunneling.max_name_length", fmt.Sprintf("the name is %d characters long, over the limit of %d (possible DNS tunnelling)", len(host), t.MaxNameLength), true
	}
	for _, label := range strings.Split(host, ".") {
		if t.MaxLabelLength > 0 && len(label) > t.MaxLabelLength {
			return "dns.tunneling.max_label_length", fmt.Sprintf("a label is %d characters long, over the limit of %d (possible DNS tunnelling)", len(label), t.MaxLabelLength), true
		}
	}
	return t.CheckEntropy(host)
}

// CheckEntropy refuses a host (NormalizeHost's form) with a label of
// MinEntropyLabel or more characters whose entropy exceeds MaxEntropy. The
// DNS filter calls it on every query, so it does not allocate unless it
// refuses.
func (t *Tunneling) CheckEntropy(host string) (rule, reason string, bad bool) {
	if t.MaxEntropy <= 0 {
		return "", "", false
	}
	start := 0
	for i := 0; i <= len(host); i++ {
		if i < len(host) && host[i] != '.' {
			continue
		}
		label := host[start:i]
		start = i + 1
		if len(label) < MinEntropyLabel {
			continue
		}
		if h := LabelEntropy(label); h > t.MaxEntropy {
			return "dns.tunneling.max_entropy", fmt.Sprintf("label %q looks random (entropy %.2f bits per character, over the limit of %.2f; possible DNS tunnelling)", label, h, t.MaxEntropy), true
		}
	}
	return "", "", false
}

// LabelEntropy is the Shannon entropy of s in bits per character, case-folded
// so that 0x20 randomization of a query name does not inflate it.
func LabelEntropy(s string) float64 {
	var counts [256]int
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		counts[c]++
	}
	n := float64(len(s))
	h := 0.0
	for _, k := range counts {
		if k > 0 {
			p := float64(k) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}
