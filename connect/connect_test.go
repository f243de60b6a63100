package connect_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/connect"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/policywatch"
	"github.com/cagent-dev/cagent/sandbox/firewall/firewalltest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.Cleanup(firewalltest.Exit)) }

// fakeClock is time.Now plus an offset the test moves.
type fakeClock struct{ off atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// recCtl records commands; fail makes the named command fail.
type recCtl struct {
	mu   sync.Mutex
	ran  []string
	fail string
}

func (r *recCtl) do(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran = append(r.ran, name)
	if name == r.fail {
		return errors.New("sandbox refused to " + name)
	}
	return nil
}
func (r *recCtl) Start(context.Context) error   { return r.do("start") }
func (r *recCtl) Stop(context.Context) error    { return r.do("stop") }
func (r *recCtl) Restart(context.Context) error { return r.do("restart") }
func (r *recCtl) Wipe(_ context.Context, ws bool) error {
	return r.do(fmt.Sprintf("wipe(%v)", ws))
}
func (r *recCtl) Status(context.Context) adminui.Status {
	return adminui.Status{Components: []adminui.ComponentStatus{{Name: "sandbox", State: "running"}}}
}
func (r *recCtl) commands() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ran)
}

type dp struct {
	c      *connect.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func (d *dp) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	<-d.done
	d.cancel = nil
	d.c.Close()
}

// startDP connects a data plane (no sandbox) to the control plane.
func startDP(t *testing.T, cfg connect.Config, ctl connect.Controller) *dp {
	t.Helper()
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 300*time.Millisecond
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 200 * time.Millisecond
	}
	c, err := connect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &dp{c: c, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(d.done); c.Run(ctx, ctl) }()
	t.Cleanup(d.stop)
	return d
}

const base = "dns:\n  upstream: [127.0.0.1:53]\nadmin:\n  listen: 127.0.0.1:0\n"

func entry(domain, secret string) map[string]any {
	e := map[string]any{"domain": domain}
	if secret != "" {
		e["tls_intercept"] = true
		e["credential"] = map[string]any{"header": "Authorization", "format": "Bearer {value}", "secret": secret}
	}
	return e
}

func hasDomain(p *policy.Policy, d string) bool {
	if p == nil {
		return false
	}
	for _, x := range p.Domains {
		if x.Domain == d {
			return true
		}
	}
	return false
}

// watch applies the merged policy file the way the daemon does.
func watch(t *testing.T, path string) *atomic.Pointer[policy.Policy] {
	t.Helper()
	var cur atomic.Pointer[policy.Policy]
	ctx, cancel := context.WithCancel(context.Background())
	w, err := policywatch.Watch(ctx, path, nil, func(p *policy.Policy) { cur.Store(p) })
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); w.Close() })
	return &cur
}

func TestPolicyAndSecretsPushedLive(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	d := startDP(t, connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp")}, nil)
	cur := watch(t, d.c.PolicyPath())
	waitFor(t, "connected", 10*time.Second, d.c.Connected)

	// Before any policy: nothing allowed, secrets unknown.
	if p := cur.Load(); len(p.Domains) != 0 || p.Mode != "connected" || p.ControlPlane.URL != cp.URL {
		t.Fatalf("initial policy: %+v", p)
	}
	cp.must("PUT", tpath+"/secrets/openai", map[string]any{"value": "sk-one"})
	cp.must("POST", tpath+"/policies", map[string]any{"entry": entry("api.openai.com", "openai")})
	waitFor(t, "tenant-wide policy", 5*time.Second, func() bool { return hasDomain(cur.Load(), "api.openai.com") })
	waitFor(t, "secret", 5*time.Second, func() bool { v, _ := d.c.Secret(context.Background(), "openai"); return v == "sk-one" })

	// A per-agent entry, a secret rotation, a removal.
	pol := cp.must("POST", tpath+"/policies", map[string]any{"agent_id": agentID, "entry": entry("pypi.org", "")})
	waitFor(t, "per-agent policy", 5*time.Second, func() bool { return hasDomain(cur.Load(), "pypi.org") })
	cp.must("POST", tpath+"/secrets/openai/rotate", map[string]any{"value": "sk-two"})
	waitFor(t, "rotated secret", 5*time.Second, func() bool { v, _ := d.c.Secret(context.Background(), "openai"); return v == "sk-two" })
	cp.must("DELETE", tpath+"/policies/"+pol["id"].(string), nil)
	waitFor(t, "removed policy", 5*time.Second, func() bool { return !hasDomain(cur.Load(), "pypi.org") })

	// An unreferenced secret never reaches the data plane.
	cp.must("PUT", tpath+"/secrets/other", map[string]any{"value": "sk-other"})
	time.Sleep(300 * time.Millisecond)
	if _, err := d.c.Secret(context.Background(), "other"); err == nil || strings.Contains(err.Error(), "sk-other") {
		t.Fatalf("unreferenced secret: %v", err)
	}
	// The persisted files are private.
	for _, f := range []string{d.c.PolicyPath(), filepath.Join(dir, "dp", "connected", "control-plane.yaml")} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), "sk-") {
			t.Fatalf("%s holds a secret value", f)
		}
	}
}

// TestChangeLatency measures how long a change made through the API takes
// to be applied by the data plane's policy watcher (what the proxy and DNS
// filter get); the figure is in docs/benchmarks.md.
func TestChangeLatency(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, _, tok := cp.agent("acme")
	d := startDP(t, connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp")}, nil)
	cur := watch(t, d.c.PolicyPath())
	waitFor(t, "connected", 10*time.Second, d.c.Connected)
	var lat []time.Duration
	for i := range 10 {
		dom := fmt.Sprintf("d%d.example.com", i)
		start := time.Now()
		cp.must("POST", tpath+"/policies", map[string]any{"entry": entry(dom, "")})
		waitFor(t, dom, 5*time.Second, func() bool { return hasDomain(cur.Load(), dom) })
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("policy change to applied on the data plane: min %v median %v max %v (n=%d)", lat[0], lat[len(lat)/2], lat[len(lat)-1], len(lat))
	if lat[len(lat)/2] > latencyLimit(time.Second) {
		t.Fatalf("median latency %v (target 1 s; limit %v)", lat[len(lat)/2], latencyLimit(time.Second))
	}
}

func TestLastPolicyKeptWhileDisconnected(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, _, tok := cp.agent("acme")
	clock := &fakeClock{}
	cfg := connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp"), Now: clock.Now}
	d := startDP(t, cfg, nil)
	cp.must("PUT", tpath+"/secrets/openai", map[string]any{"value": "sk-one"})
	cp.must("POST", tpath+"/policies", map[string]any{"entry": entry("api.openai.com", "openai")})
	waitFor(t, "secret", 10*time.Second, func() bool { v, _ := d.c.Secret(context.Background(), "openai"); return v == "sk-one" })

	cp.stop()
	waitFor(t, "disconnect", 10*time.Second, func() bool { return !d.c.Connected() })
	// Still enforcing, and the secret stays usable for 5 minutes...
	clock.Advance(4*time.Minute + 50*time.Second)
	if v, err := d.c.Secret(context.Background(), "openai"); v != "sk-one" || err != nil {
		t.Fatalf("secret within the TTL: %q %v", v, err)
	}
	// ...then fails closed with the reason.
	clock.Advance(20 * time.Second)
	_, err := d.c.Secret(context.Background(), "openai")
	if err == nil || !strings.Contains(err.Error(), "failing closed") || !strings.Contains(err.Error(), "no contact with the control plane") {
		t.Fatalf("expired secret: %v", err)
	}
	if strings.Contains(err.Error(), "sk-one") {
		t.Fatal("error holds the value")
	}

	// A restart while disconnected enforces the persisted policy; secrets
	// were in memory only.
	d.stop()
	d2 := startDP(t, cfg, nil)
	p, err := policy.ParseFile(d2.c.PolicyPath())
	if err != nil || !hasDomain(p, "api.openai.com") {
		t.Fatalf("policy after restart: %v %v", p, err)
	}
	if _, err := d2.c.Secret(context.Background(), "openai"); err == nil || !strings.Contains(err.Error(), "not received") {
		t.Fatalf("secret after restart: %v", err)
	}
	// The control plane comes back: the data plane reconnects by itself.
	cp.start()
	waitFor(t, "reconnect and secret", 15*time.Second, func() bool { v, _ := d2.c.Secret(context.Background(), "openai"); return v == "sk-one" })
}

func TestCommandsRunAndReported(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	ctl := &recCtl{fail: "stop"}
	d := startDP(t, connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp")}, ctl)
	waitFor(t, "connected", 10*time.Second, d.c.Connected)
	cmds := tpath + "/agents/" + agentID + "/commands"
	for _, tc := range []struct {
		body   map[string]any
		ran    string
		status string
	}{
		{map[string]any{"command": "restart"}, "restart", "succeeded"},
		{map[string]any{"command": "stop"}, "stop", "failed"},
		{map[string]any{"command": "start"}, "start", "succeeded"},
		{map[string]any{"command": "wipe", "wipe_workspace": true}, "wipe(true)", "succeeded"},
	} {
		c := cp.must("POST", cmds, tc.body)
		id := c["id"].(string)
		var got map[string]any
		waitFor(t, "command "+tc.ran, 10*time.Second, func() bool {
			_, l := cp.do("GET", cmds, "", nil)
			for _, it := range l["items"].([]any) {
				m := it.(map[string]any)
				if m["id"] == id && m["status"] != "pending" && m["status"] != "delivered" {
					got = m
					return true
				}
			}
			return false
		})
		if got["status"] != tc.status {
			t.Fatalf("%s: %v", tc.ran, got)
		}
		if tc.status == "failed" && !strings.Contains(got["result"].(string), "sandbox refused") {
			t.Fatalf("failure reason not reported: %v", got)
		}
	}
	if got := ctl.commands(); !slices.Equal(got, []string{"restart", "stop", "start", "wipe(true)"}) {
		t.Fatalf("ran %v (each exactly once)", got)
	}
	// The agent shows online with the data plane's metrics.
	a := cp.must("GET", tpath+"/agents/"+agentID, nil)
	if a["online"] != true || a["status"] != "running" {
		t.Fatalf("agent: %v", a)
	}
}

func TestLogsShippedExactlyOnceAcrossOutage(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, _, tok := cp.agent("acme")
	cfg := connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp")}
	d := startDP(t, cfg, nil)
	emit := func(c *connect.Client, from, to int) {
		for i := from; i < to; i++ {
			c.Emit(&audit.Event{TS: time.Now(), Type: audit.TypeHTTP, Agent: "box-1", Decision: "allow", Host: "web.test", Path: fmt.Sprintf("/ev-%d", i)})
		}
	}
	count := func() map[string]int {
		_, m := cp.do("GET", tpath+"/logs?limit=1000", "", nil)
		seen := map[string]int{}
		items, _ := m["items"].([]any)
		for _, it := range items {
			data := it.(map[string]any)["data"].(map[string]any)
			seen[data["path"].(string)]++
		}
		return seen
	}
	emit(d.c, 0, 100)
	waitFor(t, "first 100", 10*time.Second, func() bool { return len(count()) == 100 })
	waitFor(t, "first 100 acknowledged", 10*time.Second, func() bool { return d.c.Spool().Pending() == 0 })

	// Outage: events spool on disk; the data plane also restarts.
	cp.stop()
	emit(d.c, 100, 300)
	d.stop()
	d = startDP(t, cfg, nil)
	emit(d.c, 300, 400)
	if p := d.c.Spool().Pending(); p != 300 {
		t.Fatalf("pending %d, want 300", p)
	}
	cp.start()
	waitFor(t, "all 400", 15*time.Second, func() bool { return len(count()) == 400 })
	time.Sleep(300 * time.Millisecond)
	for k, n := range count() {
		if n != 1 {
			t.Fatalf("%s stored %d times", k, n)
		}
	}
	waitFor(t, "spool drained", 5*time.Second, func() bool { return d.c.Spool().Pending() == 0 })
}

func TestRevokedTokenEndsStream(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	d := startDP(t, connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp")}, nil)
	waitFor(t, "connected", 10*time.Second, d.c.Connected)
	cp.must("DELETE", tpath+"/agents/"+agentID, nil)
	waitFor(t, "stream closed", 5*time.Second, func() bool { return !d.c.Connected() })
	time.Sleep(500 * time.Millisecond)
	if d.c.Connected() {
		t.Fatal("reconnected with a revoked token")
	}
}

// gateCtl blocks restart until released.
type gateCtl struct {
	recCtl
	gate chan struct{}
}

func (g *gateCtl) Restart(ctx context.Context) error {
	g.do("restart")
	<-g.gate
	return nil
}

// A command still running when the connection drops finishes, and when
// the control plane sends it again after the reconnect it is reported,
// not run a second time.
func TestCommandNotRunTwiceAcrossReconnect(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	ctl := &gateCtl{gate: make(chan struct{})}
	d := startDP(t, connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp")}, ctl)
	waitFor(t, "connected", 10*time.Second, d.c.Connected)
	cmds := tpath + "/agents/" + agentID + "/commands"
	cp.must("POST", cmds, map[string]any{"command": "restart"})
	waitFor(t, "restart running", 10*time.Second, func() bool { return len(ctl.commands()) == 1 })
	cp.stop()
	close(ctl.gate) // finishes while the control plane is away
	time.Sleep(300 * time.Millisecond)
	cp.start()
	waitFor(t, "result reported", 15*time.Second, func() bool {
		_, l := cp.do("GET", cmds, "", nil)
		items, _ := l["items"].([]any)
		return len(items) == 1 && items[0].(map[string]any)["status"] == "succeeded"
	})
	time.Sleep(500 * time.Millisecond)
	if got := ctl.commands(); len(got) != 1 {
		t.Fatalf("ran %v", got)
	}
}
