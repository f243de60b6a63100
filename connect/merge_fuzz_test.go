package connect

import (
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/policy"
)

// FuzzMergePolicy: whatever the control plane sends, the merge either
// refuses it or yields a policy file that parses, keeps the local
// sandbox settings and stays in connected mode.
func FuzzMergePolicy(f *testing.F) {
	base := []byte("sandbox: {runtime: runc, workspace: /srv/ws}\ndns: {upstream: [127.0.0.1:53]}\ndomains: [{domain: local.example}]\n")
	for _, s := range []string{
		"version: 1\ndomains:\n  - domain: pypi.org\n",
		"domains: [{domain: api.openai.com, credential: {header: Authorization, secret: k}, tls_intercept: true}]",
		"sandbox: {runtime: gvisor}\nmode: standalone\ndomains: []",
		"domains: {", "version: 9", "", "domains: [{domain: 'bad domain'}]", "&a [*a]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, cp []byte) {
		out, p, err := mergePolicy(base, cp, "http://127.0.0.1:1")
		if err != nil {
			return
		}
		again, err := policy.Parse("merged", out)
		if err != nil {
			t.Fatalf("merged policy does not parse: %v\n%s", err, out)
		}
		if p.Mode != "connected" || again.Sandbox.Workspace != "/srv/ws" || again.Sandbox.Runtime != "runc" {
			t.Fatalf("local settings not kept: %+v", again.Sandbox)
		}
		for _, d := range again.Domains {
			if strings.Contains(d.Domain, "local.example") {
				t.Fatal("local domains survive the merge")
			}
		}
	})
}
