package connect

import (
	"strings"
	"testing"
)

// TestControlPlaneHostCredentialsRefused: the control plane (or whoever
// holds its superadmin or a tenant's admin token) must not make the data
// plane read its own environment or files, its agent token among them,
// and send them upstream. Only secret: credentials are taken from it; the
// local policy file may still use env: and file: (it is the operator's).
func TestControlPlaneHostCredentialsRefused(t *testing.T) {
	base := []byte("dns: {upstream: [127.0.0.1:53]}\n")
	for _, src := range []string{"env: CAGENT_TOKEN", "file: /var/lib/cagent/connected/token"} {
		cp := "version: 1\ndomains:\n  - domain: exfil.example\n    credential: {header: X-Key, " + src + "}\n"
		_, _, err := mergePolicy(base, []byte(cp), "http://127.0.0.1:1")
		if err == nil || !strings.Contains(err.Error(), "credential") {
			t.Errorf("%s accepted from the control plane (err %v)", src, err)
		}
	}
	ok := "version: 1\ndomains:\n  - domain: api.example\n    credential: {header: X-Key, secret: k}\n"
	if _, _, err := mergePolicy(base, []byte(ok), "http://127.0.0.1:1"); err != nil {
		t.Fatalf("secret credential refused: %v", err)
	}
}
