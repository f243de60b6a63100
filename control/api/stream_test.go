package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control/api"
	"github.com/coder/websocket"
)

type streamEnv struct {
	*env
	hub *api.Hub
	url string
}

func newStreamEnv(t *testing.T, dsn string) *streamEnv {
	hub := api.NewHub()
	e := newEnv(t, dsn, func(c *api.Config) { c.Notify = hub.Notify })
	hs := httptest.NewServer(e.srv.StreamHandler(hub, api.StreamOptions{}))
	t.Cleanup(func() { hub.Close(); hs.Close() })
	return &streamEnv{env: e, hub: hub, url: hs.URL + wire.Path}
}

func (s *streamEnv) dial(token string) (*websocket.Conn, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		if resp == nil {
			s.t.Fatalf("dial: %v", err)
		}
		return nil, resp.StatusCode
	}
	c.SetReadLimit(wire.MaxMessage)
	s.t.Cleanup(func() { c.CloseNow() })
	return c, http.StatusSwitchingProtocols
}

func read(t *testing.T, c *websocket.Conn) wire.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m wire.Msg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// readType skips heartbeat acks until a message of type typ.
func readType(t *testing.T, c *websocket.Conn, typ string) wire.Msg {
	t.Helper()
	for {
		if m := read(t, c); m.Type == typ {
			return m
		}
	}
}

func write(t *testing.T, c *websocket.Conn, m wire.Msg) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := c.Write(context.Background(), websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

func TestStreamAdmitsOnlyAgentTokens(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		s := newStreamEnv(t, dsn)
		f := s.tenant("acme")
		for _, tc := range []struct {
			name, token string
			want        int
		}{
			{"none", "", 401},
			{"garbage", "cagent_000000000000000000000000_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 401},
			{"superadmin", s.super, 403},
			{"admin", f.admin, 403},
			{"dev", f.dev, 403},
			{"agent", f.agent, 101},
		} {
			if _, got := s.dial(tc.token); got != tc.want {
				t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
			}
		}
	})
}

func TestStreamPushesOnlyTheAgentsOwnState(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		s := newStreamEnv(t, dsn)
		a, b := s.tenant("a"), s.tenant("b")
		ent := func(dom string) map[string]any {
			return map[string]any{"entry": map[string]any{"domain": dom, "tls_intercept": true,
				"credential": map[string]any{"header": "Authorization", "secret": "k"}}}
		}
		for _, x := range []struct {
			f   *tenantFx
			val string
		}{{a, "value-of-a"}, {b, "value-of-b"}} {
			s.must(201, s.do("PUT", x.f.path("/secrets/k"), x.f.admin, map[string]any{"value": x.val}))
			s.must(201, s.do("POST", x.f.path("/policies"), x.f.admin, ent(x.f.name+".example.com")))
		}
		c, _ := s.dial(a.agent)
		m := readType(t, c, wire.TypeState)
		if m.Secrets["k"] != "value-of-a" || len(m.Secrets) != 1 || !strings.Contains(m.PolicyYAML, "a.example.com") || strings.Contains(m.PolicyYAML, "b.example.com") {
			t.Fatalf("state of a: %+v", m)
		}
		// A change in tenant b sends nothing to a; a's own change arrives.
		s.must(201, s.do("POST", b.path("/policies"), b.admin, map[string]any{"entry": map[string]any{"domain": "only-b.example.com"}}))
		s.must(201, s.do("POST", a.path("/policies"), a.admin, map[string]any{"agent_id": a.agentID, "entry": map[string]any{"domain": "only-a.example.com"}}))
		m2 := readType(t, c, wire.TypeState)
		if !strings.Contains(m2.PolicyYAML, "only-a.example.com") || strings.Contains(m2.PolicyYAML, "only-b") || m2.Secrets["k"] != "value-of-a" || m2.Version == m.Version {
			t.Fatalf("second state of a: %+v", m2)
		}
	})
}

func TestStreamLogsAreIdempotent(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		s := newStreamEnv(t, dsn)
		f := s.tenant("acme")
		c, _ := s.dial(f.agent)
		batch := wire.Msg{Type: wire.TypeLogs, Spool: "0123456789abcdef0123456789abcdef", FirstSeq: 7, Entries: []json.RawMessage{
			json.RawMessage(`{"type":"http","path":"/one","agent_id":"spoofed","tenant_id":"spoofed"}`),
			json.RawMessage(`"not an object"`),
			json.RawMessage(`{"type":"dns","qname":"two.test"}`),
		}}
		for range 2 { // the second time as after a lost acknowledgement
			write(t, c, batch)
			ack := readType(t, c, wire.TypeLogsAck)
			if ack.LastSeq != 9 || !strings.Contains(ack.Message, "1 entries rejected") {
				t.Fatalf("ack: %+v", ack)
			}
		}
		logs := s.must(200, s.do("GET", f.path("/logs"), f.admin, nil)).items(t)
		if len(logs) != 2 {
			t.Fatalf("stored %d entries, want 2: %v", len(logs), logs)
		}
		for _, l := range logs {
			if l["agent_id"] != f.agentID || strings.Contains(string(mustJSON(l)), "spoofed") {
				t.Fatalf("entry %v", l)
			}
		}
		// Bad batches are refused and end the stream.
		write(t, c, wire.Msg{Type: wire.TypeLogs, Spool: "NOT-HEX", FirstSeq: 1, Entries: batch.Entries})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
					t.Fatalf("close: %v", err)
				}
				break
			}
		}
	})
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func TestStreamCommandsAndHeartbeats(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		s := newStreamEnv(t, dsn)
		f := s.tenant("acme")
		c, _ := s.dial(f.agent)
		readType(t, c, wire.TypeState)
		cmd := s.must(201, s.do("POST", f.path("/agents/"+f.agentID+"/commands"), f.admin, map[string]any{"command": "wipe", "wipe_workspace": true})).json(t)
		m := readType(t, c, wire.TypeCommand)
		if m.Command == nil || m.Command.ID != cmd["id"] || m.Command.Command != "wipe" || !m.Command.WipeWorkspace {
			t.Fatalf("command: %+v", m.Command)
		}
		write(t, c, wire.Msg{Type: wire.TypeHeartbeat, Status: "running", Metrics: json.RawMessage(`{"cpu":1}`),
			Results: []wire.Result{{ID: m.Command.ID, Status: wire.Succeeded, Result: "wiped"}}})
		readType(t, c, wire.TypeHeartbeatAck)
		got := s.must(200, s.do("GET", f.path("/agents/"+f.agentID+"/commands"), f.admin, nil)).items(t)
		if got[0]["status"] != "succeeded" || got[0]["result"] != "wiped" {
			t.Fatalf("commands: %v", got)
		}
		ag := s.must(200, s.do("GET", f.path("/agents/"+f.agentID), f.admin, nil)).json(t)
		if ag["online"] != true || ag["status"] != "running" {
			t.Fatalf("agent: %v", ag)
		}
		audit := s.must(200, s.do("GET", f.path("/audit?action=command.result"), f.admin, nil)).items(t)
		if len(audit) != 1 {
			t.Fatalf("audit: %v", audit)
		}
		// Disabling the agent's token ends the stream at the next change.
		var tokID string
		for _, tk := range s.must(200, s.do("GET", f.path("/tokens"), f.admin, nil)).items(t) {
			if tk["kind"] == "agent" {
				tokID = tk["id"].(string)
			}
		}
		s.must(200, s.do("PATCH", f.path("/tokens/"+tokID), f.admin, map[string]any{"disabled": true}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
					t.Fatalf("close: %v", err)
				}
				break
			}
		}
	})
}
