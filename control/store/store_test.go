package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/control/store/storetest"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		for i := 0; i < 2; i++ {
			s, err := store.Open(ctx, dsn, nil)
			mustNil(t, err)
			v, err := s.Version(ctx)
			mustNil(t, err)
			if v != store.SchemaVersion {
				t.Fatalf("version %d, want %d", v, store.SchemaVersion)
			}
			s.Close()
		}
	})
}

func TestTenantsAndTokens(t *testing.T) {
	storetest.EachStore(t, func(t *testing.T, s *store.SQL) {
		ctx := context.Background()
		mustNil(t, s.CreateTenant(ctx, store.Tenant{ID: "ta", Name: "a", CreatedAt: t0}))
		mustNil(t, s.CreateTenant(ctx, store.Tenant{ID: "tb", Name: "b", CreatedAt: t0}))
		wantErr(t, s.CreateTenant(ctx, store.Tenant{ID: "tc", Name: "a", CreatedAt: t0}), store.ErrConflict)
		ts, err := s.ListTenants(ctx)
		mustNil(t, err)
		if len(ts) != 2 || ts[0].Name != "a" || !ts[0].CreatedAt.Equal(t0) {
			t.Fatalf("tenants = %+v", ts)
		}
		mustNil(t, s.CreateToken(ctx, store.Token{ID: "k1", TenantID: "ta", Kind: store.KindAdmin, Name: "x", Salt: "s", Hash: "h", CreatedAt: t0}))
		mustNil(t, s.CreateAgent(ctx, store.Agent{ID: "ag", TenantID: "ta", Name: "n", CreatedAt: t0}))
		// Another tenant's token is not found.
		_, err = s.GetToken(ctx, "tb", "k1")
		wantErr(t, err, store.ErrNotFound)
		wantErr(t, s.DeleteToken(ctx, "tb", "k1"), store.ErrNotFound)
		dis := true
		_, err = s.UpdateToken(ctx, "tb", "k1", &dis, nil)
		wantErr(t, err, store.ErrNotFound)
		exp := t0.Add(time.Hour)
		tok, err := s.UpdateToken(ctx, "ta", "k1", nil, &exp)
		mustNil(t, err)
		if !tok.ExpiresAt.Equal(exp) || tok.Disabled {
			t.Fatalf("token = %+v", tok)
		}
		// Deleting a tenant hides it and disables its tokens and agents.
		mustNil(t, s.DeleteTenant(ctx, "ta"))
		_, err = s.GetTenant(ctx, "ta")
		wantErr(t, err, store.ErrNotFound)
		tok, err = s.GetToken(ctx, "ta", "k1")
		mustNil(t, err)
		// And authentication no longer finds its tokens at all, so one
		// created by a request racing the deletion does not work either.
		_, err = s.GetTokenForAuth(ctx, "k1")
		wantErr(t, err, store.ErrNotFound)
		mustNil(t, s.CreateToken(ctx, store.Token{ID: "late", TenantID: "ta", Kind: store.KindAdmin, Name: "x", Salt: "s", Hash: "h", CreatedAt: t0}))
		_, err = s.GetTokenForAuth(ctx, "late")
		wantErr(t, err, store.ErrNotFound)
		a, err := s.GetAgent(ctx, "ta", "ag")
		mustNil(t, err)
		if !tok.Disabled || !a.Disabled {
			t.Fatal("tenant deletion left token or agent enabled")
		}
		// The name is free again.
		mustNil(t, s.CreateTenant(ctx, store.Tenant{ID: "td", Name: "a", CreatedAt: t0}))
	})
}

// TestPoliciesForAgentTenantBound guards against the seed's leak: tenant-wide
// entries of another tenant must never reach an agent.
func TestPoliciesForAgentTenantBound(t *testing.T) {
	storetest.EachStore(t, func(t *testing.T, s *store.SQL) {
		ctx := context.Background()
		entry := json.RawMessage(`{"domain":"x"}`)
		for _, p := range []store.Policy{
			{ID: "1", TenantID: "ta", Domain: "a-wide.test", Enabled: true},
			{ID: "2", TenantID: "ta", AgentID: "ag1", Domain: "a-agent.test", Enabled: true},
			{ID: "3", TenantID: "ta", AgentID: "ag2", Domain: "other-agent.test", Enabled: true},
			{ID: "4", TenantID: "tb", Domain: "b-wide.test", Enabled: true},
			{ID: "5", TenantID: "tb", AgentID: "ag1", Domain: "b-same-agent-id.test", Enabled: true},
			{ID: "6", TenantID: "ta", Domain: "disabled.test", Enabled: false},
		} {
			p.Entry, p.CreatedAt, p.UpdatedAt = entry, t0, t0
			mustNil(t, s.CreatePolicy(ctx, p))
		}
		ps, err := s.PoliciesForAgent(ctx, "ta", "ag1")
		mustNil(t, err)
		var got []string
		for _, p := range ps {
			got = append(got, p.Domain)
		}
		if len(got) != 2 || got[0] != "a-agent.test" || got[1] != "a-wide.test" {
			t.Fatalf("policies for ta/ag1 = %v", got)
		}
		wantErr(t, s.CreatePolicy(ctx, store.Policy{ID: "7", TenantID: "ta", Domain: "a-wide.test", Entry: entry}), store.ErrConflict)
		_, err = s.GetPolicy(ctx, "tb", "1")
		wantErr(t, err, store.ErrNotFound)
		wantErr(t, s.DeletePolicy(ctx, "tb", "1"), store.ErrNotFound)
		_, err = s.UpdatePolicy(ctx, store.Policy{ID: "1", TenantID: "tb", Domain: "z", Entry: entry})
		wantErr(t, err, store.ErrNotFound)
	})
}

func TestSecrets(t *testing.T) {
	storetest.EachStore(t, func(t *testing.T, s *store.SQL) {
		ctx := context.Background()
		x := store.Secret{ID: "s1", TenantID: "ta", Name: "k", KeyID: "k1", Sealed: []byte{1, 2, 3}, CreatedAt: t0, UpdatedAt: t0}
		got, created, err := s.PutSecret(ctx, x)
		mustNil(t, err)
		if !created || got.Version != 1 {
			t.Fatalf("put: %+v created=%v", got, created)
		}
		x.Sealed = []byte{4}
		got, created, err = s.PutSecret(ctx, x)
		mustNil(t, err)
		if created || got.Version != 2 || string(got.Sealed) != "\x04" {
			t.Fatalf("replace: %+v created=%v", got, created)
		}
		_, err = s.ReplaceSecret(ctx, store.Secret{TenantID: "tb", Name: "k", KeyID: "k1", Sealed: []byte{9}})
		wantErr(t, err, store.ErrNotFound)
		_, err = s.GetSecret(ctx, "tb", "k")
		wantErr(t, err, store.ErrNotFound)
		wantErr(t, s.Reseal(ctx, "s1", "wrong", "k2", []byte{5}), store.ErrNotFound)
		mustNil(t, s.Reseal(ctx, "s1", "k1", "k2", []byte{5}))
		got, err = s.GetSecret(ctx, "ta", "k")
		mustNil(t, err)
		if got.KeyID != "k2" || string(got.Sealed) != "\x05" {
			t.Fatalf("resealed: %+v", got)
		}
		wantErr(t, s.DeleteSecret(ctx, "tb", "k"), store.ErrNotFound)
		mustNil(t, s.DeleteSecret(ctx, "ta", "k"))
	})
}

func TestCommandsOnePending(t *testing.T) {
	storetest.EachStore(t, func(t *testing.T, s *store.SQL) {
		ctx := context.Background()
		c := store.Command{ID: "c1", TenantID: "ta", AgentID: "ag", Kind: "restart", CreatedAt: t0}
		mustNil(t, s.CreateCommand(ctx, c))
		c.ID = "c2"
		wantErr(t, s.CreateCommand(ctx, c), store.ErrConflict)
		// Another agent is independent.
		mustNil(t, s.CreateCommand(ctx, store.Command{ID: "c3", TenantID: "ta", AgentID: "ag2", Kind: "stop", CreatedAt: t0}))
		nc, err := s.NextCommand(ctx, "tb", "ag", t0)
		mustNil(t, err)
		if nc != nil {
			t.Fatal("other tenant saw the command")
		}
		nc, err = s.NextCommand(ctx, "ta", "ag", t0)
		mustNil(t, err)
		if nc == nil || nc.ID != "c1" || nc.Status != store.CmdDelivered {
			t.Fatalf("next = %+v", nc)
		}
		wantErr(t, s.CompleteCommand(ctx, "ta", "ag2", "c1", store.CmdSucceeded, "", t0), store.ErrNotFound)
		mustNil(t, s.CompleteCommand(ctx, "ta", "ag", "c1", store.CmdSucceeded, "ok", t0))
		wantErr(t, s.CompleteCommand(ctx, "ta", "ag", "c1", store.CmdFailed, "", t0), store.ErrNotFound)
		mustNil(t, s.CreateCommand(ctx, store.Command{ID: "c4", TenantID: "ta", AgentID: "ag", Kind: "wipe", WipeWorkspace: true, CreatedAt: t0.Add(time.Second)}))
		cs, err := s.ListCommands(ctx, "ta", "ag", 10)
		mustNil(t, err)
		if len(cs) != 2 || cs[0].ID != "c4" || !cs[0].WipeWorkspace || cs[1].Result != "ok" {
			t.Fatalf("commands = %+v", cs)
		}
	})
}

func TestLogsAndAudit(t *testing.T) {
	storetest.EachStore(t, func(t *testing.T, s *store.SQL) {
		ctx := context.Background()
		var es []store.LogEntry
		for i := 0; i < 5; i++ {
			es = append(es, store.LogEntry{TenantID: "ta", AgentID: "ag", TS: t0.Add(time.Duration(i) * time.Minute),
				ReceivedAt: t0.Add(time.Duration(i) * time.Minute), Type: "http", Data: json.RawMessage(`{"host":"H` + string(rune('a'+i)) + `_%"}`)})
		}
		es = append(es, store.LogEntry{TenantID: "tb", AgentID: "ag", TS: t0, ReceivedAt: t0, Type: "http", Data: json.RawMessage(`{}`)})
		mustNil(t, s.InsertLogs(ctx, es))
		got, err := s.QueryLogs(ctx, store.LogFilter{TenantID: "ta", Since: t0.Add(time.Minute), Until: t0.Add(4 * time.Minute), Limit: 2})
		mustNil(t, err)
		if len(got) != 2 || !got[0].TS.Equal(t0.Add(3*time.Minute)) {
			t.Fatalf("logs = %+v", got)
		}
		got, err = s.QueryLogs(ctx, store.LogFilter{TenantID: "ta", Contains: "hc_%"})
		mustNil(t, err)
		if len(got) != 1 {
			t.Fatalf("contains: %d entries", len(got))
		}
		got, err = s.QueryLogs(ctx, store.LogFilter{TenantID: "ta", Contains: "h_"})
		mustNil(t, err)
		if len(got) != 0 {
			t.Fatalf("LIKE wildcard not escaped: %d entries", len(got))
		}
		n, err := s.DeleteLogsBefore(ctx, t0.Add(2*time.Minute))
		mustNil(t, err)
		if n != 3 {
			t.Fatalf("retention deleted %d, want 3", n)
		}

		mustNil(t, s.AppendAudit(ctx, store.AuditEntry{TS: t0, TenantID: "ta", ActorID: "k1", Action: "policy.create", ObjectType: "policy"}))
		mustNil(t, s.AppendAudit(ctx, store.AuditEntry{TS: t0, TenantID: "tb", ActorID: "k2", Action: "policy.create", ObjectType: "policy"}))
		a, err := s.QueryAudit(ctx, store.AuditFilter{TenantID: "ta"})
		mustNil(t, err)
		if len(a) != 1 || a[0].ActorID != "k1" {
			t.Fatalf("audit = %+v", a)
		}
		a, err = s.QueryAudit(ctx, store.AuditFilter{AllTenants: true, Action: "policy.create"})
		mustNil(t, err)
		if len(a) != 2 {
			t.Fatalf("all-tenant audit = %d", len(a))
		}
	})
}

func TestHeartbeatBatch(t *testing.T) {
	storetest.EachStore(t, func(t *testing.T, s *store.SQL) {
		ctx := context.Background()
		mustNil(t, s.CreateAgent(ctx, store.Agent{ID: "ag", TenantID: "ta", Name: "n", CreatedAt: t0}))
		mustNil(t, s.HeartbeatBatch(ctx, []store.HeartbeatUpdate{
			{TenantID: "ta", AgentID: "ag", At: t0.Add(time.Minute), Status: "running", Metrics: json.RawMessage(`{"a":1}`)},
			{TenantID: "tb", AgentID: "ag", At: t0.Add(time.Hour), Status: "spoofed"}, // wrong tenant: ignored
			{TenantID: "ta", AgentID: "gone", At: t0},
		}))
		// An older heartbeat never overwrites a newer one.
		mustNil(t, s.HeartbeatBatch(ctx, []store.HeartbeatUpdate{{TenantID: "ta", AgentID: "ag", At: t0, Status: "old"}}))
		a, err := s.GetAgent(ctx, "ta", "ag")
		mustNil(t, err)
		if a.Status != "running" || !a.LastHeartbeat.Equal(t0.Add(time.Minute)) || string(a.Metrics) != `{"a":1}` {
			t.Fatalf("agent = %+v", a)
		}
		open, err := s.HasOpenCommand(ctx, "ta", "ag")
		mustNil(t, err)
		if open {
			t.Fatal("open command without one")
		}
		mustNil(t, s.CreateCommand(ctx, store.Command{ID: "c", TenantID: "ta", AgentID: "ag", Kind: "stop", CreatedAt: t0}))
		if open, _ = s.HasOpenCommand(ctx, "ta", "ag"); !open {
			t.Fatal("no open command")
		}
		if open, _ = s.HasOpenCommand(ctx, "tb", "ag"); open {
			t.Fatal("other tenant sees the command")
		}
	})
}

func TestHeartbeatBatchChunks(t *testing.T) {
	storetest.EachStore(t, func(t *testing.T, s *store.SQL) {
		ctx := context.Background()
		var hs []store.HeartbeatUpdate
		for i := 0; i < 450; i++ { // more than one chunk
			id := fmt.Sprintf("ag%d", i)
			mustNil(t, s.CreateAgent(ctx, store.Agent{ID: id, TenantID: "ta", Name: id, CreatedAt: t0}))
			hs = append(hs, store.HeartbeatUpdate{TenantID: "ta", AgentID: id, At: t0.Add(time.Duration(i+1) * time.Second), Status: "s"})
		}
		mustNil(t, s.HeartbeatBatch(ctx, hs))
		as, err := s.ListAgents(ctx, "ta")
		mustNil(t, err)
		for _, a := range as {
			var i int
			fmt.Sscanf(a.ID, "ag%d", &i)
			if a.Status != "s" || !a.LastHeartbeat.Equal(t0.Add(time.Duration(i+1)*time.Second)) {
				t.Fatalf("agent %s: %+v", a.ID, a)
			}
		}
	})
}

func TestInTx(t *testing.T) {
	storetest.EachStore(t, func(t *testing.T, s *store.SQL) {
		ctx := context.Background()
		boom := errors.New("boom")
		err := s.InTx(ctx, func(st store.Store) error {
			mustNil(t, st.CreateTenant(ctx, store.Tenant{ID: "t1", Name: "one", CreatedAt: t0}))
			if _, err := st.GetTenant(ctx, "t1"); err != nil {
				t.Fatalf("read inside the transaction: %v", err)
			}
			mustNil(t, st.AppendAudit(ctx, store.AuditEntry{TS: t0, TenantID: "t1", Action: "tenant.create"}))
			return boom
		})
		wantErr(t, err, boom)
		_, err = s.GetTenant(ctx, "t1")
		wantErr(t, err, store.ErrNotFound)
		if a, _ := s.QueryAudit(ctx, store.AuditFilter{TenantID: "t1"}); len(a) != 0 {
			t.Fatal("audit row of a rolled back change survived")
		}
		mustNil(t, s.InTx(ctx, func(st store.Store) error {
			mustNil(t, st.CreateTenant(ctx, store.Tenant{ID: "t1", Name: "one", CreatedAt: t0}))
			mustNil(t, st.CreateAgent(ctx, store.Agent{ID: "a", TenantID: "t1", Name: "a", CreatedAt: t0}))
			_, _, err := st.PutSecret(ctx, store.Secret{ID: "s", TenantID: "t1", Name: "k", KeyID: "k", Sealed: []byte{1}, CreatedAt: t0, UpdatedAt: t0})
			return err
		}))
		if _, err := s.GetAgent(ctx, "t1", "a"); err != nil {
			t.Fatal(err)
		}
		// A conflict inside the transaction surfaces as ErrConflict.
		err = s.InTx(ctx, func(st store.Store) error {
			return st.CreateTenant(ctx, store.Tenant{ID: "t2", Name: "one", CreatedAt: t0})
		})
		wantErr(t, err, store.ErrConflict)
	})
}
