package connect_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/connect"
	"github.com/cagent-dev/cagent/control/store/storetest"
)

// startReplica runs a second control plane on a's database and keys.
func startReplica(t *testing.T, a *cp) *cp {
	t.Helper()
	b := &cp{t: t, cfg: a.cfg, super: a.super}
	b.cfg.Listen = "127.0.0.1:0"
	b.start()
	t.Cleanup(b.stop)
	return b
}

// TestChangeThroughOtherReplica: two control-plane replicas on one
// PostgreSQL; the data plane is connected to B; changes are made through
// A and reach it (LISTEN/NOTIFY), within 1 s.
func TestChangeThroughOtherReplica(t *testing.T) {
	dsn := storetest.PostgresSchema(t)
	dir := t.TempDir()
	a := startCP(t, filepath.Join(dir, "cp"), dsn)
	b := startReplica(t, a)
	tpath, agentID, tok := a.agent("acme")
	ctl := &recCtl{}
	d := startDP(t, connect.Config{URL: b.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp")}, ctl)
	cur := watch(t, d.c.PolicyPath())
	waitFor(t, "connected to B", 10*time.Second, d.c.Connected)
	var worst time.Duration
	for _, dom := range []string{"one.example.com", "two.example.com", "three.example.com"} {
		start := time.Now()
		a.must("POST", tpath+"/policies", map[string]any{"agent_id": agentID, "entry": entry(dom, "")})
		waitFor(t, dom+" through replica A", 5*time.Second, func() bool { return hasDomain(cur.Load(), dom) })
		worst = max(worst, time.Since(start))
	}
	t.Logf("change through replica A applied by a data plane on replica B: worst %v of 3", worst)
	if worst > latencyLimit(2*time.Second) {
		t.Errorf("took %v (target 1 s; limit %v)", worst, latencyLimit(2*time.Second))
	}
	a.must("PUT", tpath+"/secrets/k", map[string]any{"value": "v1"})
	a.must("POST", tpath+"/policies", map[string]any{"entry": entry("api.example.com", "k")})
	waitFor(t, "secret through A", 5*time.Second, func() bool { v, _ := d.c.Secret(t.Context(), "k"); return v == "v1" })
	// A command queued on A runs on the data plane connected to B.
	a.must("POST", tpath+"/agents/"+agentID+"/commands", map[string]any{"command": "restart"})
	waitFor(t, "command through A", 10*time.Second, func() bool { return len(ctl.commands()) == 1 })
}
