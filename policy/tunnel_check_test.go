package policy

import (
	"strings"
	"testing"
)

func TestTunnelingCheckHost(t *testing.T) {
	tn := &Tunneling{MaxLabelLength: 20, MaxNameLength: 60, MaxEntropy: 4.0}
	for _, tc := range []struct {
		host, rule string
	}{
		{"api.example.com", ""},
		{strings.Repeat("a", 20) + ".example.com", ""},
		{strings.Repeat("a", 21) + ".example.com", "dns.tunneling.max_label_length"},
		{strings.Repeat("abcdefghi.", 6) + "example.com", "dns.tunneling.max_name_length"},
		{"q8zk3v1xw7mf0j2pa5ny.example.com", "dns.tunneling.max_entropy"},
		{"abcdefghijklmnop.example.com", ""}, // 16 distinct: exactly 4.0, not over
	} {
		rule, _, bad := tn.CheckHost(tc.host)
		if bad != (tc.rule != "") || rule != tc.rule {
			t.Errorf("%s: rule %q bad %v, want %q", tc.host, rule, bad, tc.rule)
		}
	}
}
