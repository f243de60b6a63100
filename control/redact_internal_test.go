package control

import (
	"strings"
	"testing"
)

// TestRedactDSN: the database address is logged at start; no form of a
// PostgreSQL password may reach the log.
func TestRedactDSN(t *testing.T) {
	for _, c := range []struct{ dsn, want string }{
		{"sqlite:/var/lib/cagent-control/control.db", "sqlite:/var/lib/cagent-control/control.db"},
		{"postgres://cagent@db.internal/cagent?sslmode=verify-full", "postgres://cagent@db.internal/cagent?sslmode=verify-full"},
		{"postgres://cagent:s3cret-pw@db.internal/cagent", "postgres://cagent:REDACTED@db.internal/cagent"},
		{"postgresql://cagent:p@ss-s3cret-pw@db.internal:5432/cagent", "postgresql://cagent:REDACTED@db.internal:5432/cagent"},
		{"postgres://cagent@db.internal/cagent?password=s3cret-pw&sslmode=require", "postgres://cagent@db.internal/cagent?password=REDACTED&sslmode=require"},
		{"postgres://db.internal/cagent?sslpassword=s3cret-pw", "postgres://db.internal/cagent?sslpassword=REDACTED"},
		{"postgres://cagent:s3cret-pw@db internal/%zz", "postgres://***"},
	} {
		got := redactDSN(c.dsn)
		if strings.Contains(got, "s3cret") || strings.Contains(got, "ss-") || got != c.want {
			t.Errorf("redactDSN(%q) = %q, want %q", c.dsn, got, c.want)
		}
	}
}
