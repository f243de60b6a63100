package api

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/control/keys"
	"github.com/cagent-dev/cagent/control/store"
)

// FuzzStreamMessage feeds arbitrary messages from a data plane to the
// stream's handler: it never panics, answers or refuses with an API error
// (never an internal one), and stores only entries of the calling agent.
func FuzzStreamMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"heartbeat","status":"running","metrics":{"cpu":1},"command_results":[{"id":"x","status":"succeeded"}]}`,
		`{"type":"heartbeat","status":"BAD STATUS"}`,
		`{"type":"heartbeat","metrics":[1,2]}`,
		`{"type":"logs","spool":"0123456789abcdef","first_seq":1,"entries":[{"type":"http","agent_id":"other"},"x",{"ts":"9999-01-01T00:00:00Z"}]}`,
		`{"type":"logs","spool":"0123456789abcdef","first_seq":18446744073709551615,"entries":[{},{}]}`,
		`{"type":"logs","spool":"zz","first_seq":1,"entries":[{}]}`,
		`{"type":"logs","spool":"0123456789abcdef","first_seq":0,"entries":[{}]}`,
		`{"type":"state","policy_yaml":"x"}`,
		`{"type":"nope"}`, `null`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(dir, "c.db"), nil)
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	h, _ := keys.NewHasher(bytes.Repeat([]byte{1}, 32))
	kr, _ := keys.NewKeyring()
	s, err := New(Config{Store: st, Hasher: h, Keyring: kr, HeartbeatFlush: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now().UTC()
	st.CreateTenant(ctx, store.Tenant{ID: "t1", Name: "t1", CreatedAt: now})
	st.CreateAgent(ctx, store.Agent{ID: "a1", TenantID: "t1", Name: "a1", CreatedAt: now})
	r := httptest.NewRequest("GET", "/api/v1/agent/stream", nil)
	a := &agentStream{s: s, h: NewHub(), c: &call{r: r, s: s, rid: "fuzz", p: Principal{TokenID: "tok", Kind: store.KindAgent, TenantID: "t1", AgentID: "a1"}, tenantID: "t1"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		reply, _, err := a.handle(ctx, b)
		var ae *apiError
		if err != nil && !errors.As(err, &ae) {
			t.Fatalf("internal error for %q: %v", b, err)
		}
		if err == nil && reply == nil {
			t.Fatalf("no reply and no error for %q", b)
		}
		logs, err := st.QueryLogs(ctx, store.LogFilter{TenantID: "t1", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range logs {
			if l.AgentID != "a1" || l.TenantID != "t1" {
				t.Fatalf("entry stored for another agent: %+v", l)
			}
		}
	})
}
