package connect_test

import (
	"context"
	"fmt"
	"github.com/cagent-dev/cagent/connect/connecttest"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/connect"
	"github.com/cagent-dev/cagent/daemon"
	"github.com/cagent-dev/cagent/internal/fakeinet"
	"github.com/cagent-dev/cagent/internal/testutil"
)

// connectedDaemon is `cagent up --control-plane`: the real daemon with a
// sandbox, its proxy and DNS filter, run by a connect.Client.
type connectedDaemon struct {
	t  *testing.T
	d  *daemon.Daemon
	c  *connect.Client
	in *fakeinet.Internet
}

func startConnectedDaemon(t *testing.T, cpURL, token string, now func() time.Time) *connectedDaemon {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	testutil.RequireCommand(t, "curl")
	d, c, in := connecttest.Start(t, connecttest.Options{URL: cpURL, Token: token, SubnetPool: "10.209.112.0/20", Now: now})
	cd := &connectedDaemon{t: t, d: d, c: c, in: in}
	waitFor(t, "sandbox running", 60*time.Second, func() bool {
		for _, comp := range d.Status(context.Background()).Components {
			if comp.State != adminui.StateRunning || !comp.Healthy {
				return false
			}
		}
		return true
	})
	return cd
}

func (cd *connectedDaemon) sh(cmd string) string {
	cd.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := cd.d.Exec(ctx, adminui.ExecRequest{Cmd: []string{"/bin/sh", "-c", cmd}})
	if err != nil {
		cd.t.Fatalf("exec %q: %v", cmd, err)
	}
	defer p.Close()
	out, _ := io.ReadAll(p)
	p.Wait()
	return strings.TrimSpace(string(out))
}

// until runs probe in the sandbox in a tight loop until its output is
// want, and returns the time (Unix seconds, host clock) it first was.
func (cd *connectedDaemon) until(probe, want string) float64 {
	cd.t.Helper()
	out := cd.sh(fmt.Sprintf(`i=0; while [ $i -lt 3000 ]; do r=$(%s); if [ "$r" = "%s" ]; then date +%%s.%%N; exit 0; fi; i=$((i+1)); done; echo "gave up: $r"`, probe, want))
	f, err := strconv.ParseFloat(out, 64)
	if err != nil {
		cd.t.Fatalf("probe %q never gave %q: %s", probe, want, out)
	}
	return f
}

const (
	proxyProbe = `curl -s -m 2 -o /dev/null -w '%{http_code}' http://web.test/probe`
	// NXDOMAIN only: a timeout or another failure is not a denial (getent,
	// the fallback without Python, cannot tell them apart).
	dnsProbe = `if [ -x /usr/bin/python3 ]; then /usr/bin/python3 -c 'import socket
try:
    socket.getaddrinfo("web.test", 80); print("resolves")
except socket.gaierror as e:
    print("nxdomain" if e.errno == socket.EAI_NONAME else "error")'; else getent hosts web.test >/dev/null && echo resolves || echo nxdomain; fi`
)

// TestConnectedDaemonEnforcesControlPlaneChanges: a policy change made in
// the control plane reaches the data plane's proxy AND DNS filter within
// 1 s; a secret rotation reaches the injected header; commands run on the
// real sandbox; the agent's traffic shows up in the control plane's logs.
func TestConnectedDaemonEnforcesControlPlaneChanges(t *testing.T) {
	cp := startCP(t, filepath.Join(t.TempDir(), "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	clock := &fakeClock{}
	cd := startConnectedDaemon(t, cp.URL, tok, clock.Now)
	waitFor(t, "connected", 10*time.Second, cd.c.Connected)

	// No policy yet: nothing is allowed.
	if got := cd.sh(proxyProbe); got != "403" {
		t.Fatalf("before any policy: %s", got)
	}
	if got := cd.sh(dnsProbe); got != "nxdomain" {
		t.Fatalf("dns before any policy: %s", got)
	}

	var proxyLat, dnsLat []time.Duration
	for range 3 {
		for _, add := range []bool{true, false} {
			wantProxy, wantDNS := "403", "nxdomain"
			if add {
				wantProxy, wantDNS = "200", "resolves"
			}
			pc, dc := make(chan float64, 1), make(chan float64, 1)
			go func() { pc <- cd.until(proxyProbe, wantProxy) }()
			go func() { dc <- cd.until(dnsProbe, wantDNS) }()
			time.Sleep(500 * time.Millisecond) // the probes are looping
			start := time.Now()
			if add {
				cp.must("POST", tpath+"/policies", map[string]any{"agent_id": agentID, "entry": map[string]any{"domain": "web.test", "allow_private": true}})
			} else {
				_, l := cp.do("GET", tpath+"/policies", "", nil)
				for _, it := range l["items"].([]any) {
					cp.must("DELETE", tpath+"/policies/"+it.(map[string]any)["id"].(string), nil)
				}
			}
			p, d := <-pc, <-dc
			t0 := float64(start.UnixNano()) / 1e9
			if p < t0 || d < t0 {
				t.Fatalf("a probe saw the new state before the change (proxy %+.3fs, dns %+.3fs)", p-t0, d-t0)
			}
			proxyLat = append(proxyLat, time.Duration((p-t0)*1e9))
			dnsLat = append(dnsLat, time.Duration((d-t0)*1e9))
		}
	}
	for _, l := range []struct {
		name string
		v    []time.Duration
	}{{"proxy", proxyLat}, {"dns", dnsLat}} {
		sort.Slice(l.v, func(i, j int) bool { return l.v[i] < l.v[j] })
		t.Logf("control-plane change enforced by the %s: min %v median %v max %v (n=%d)", l.name, l.v[0], l.v[len(l.v)/2], l.v[len(l.v)-1], len(l.v))
		// The target is 1 s; a single slow probe on a loaded machine (the
		// probe's own process start) gets twice that.
		if med, worst := l.v[len(l.v)/2], l.v[len(l.v)-1]; med > latencyLimit(time.Second) || worst > latencyLimit(2*time.Second) {
			t.Errorf("%s: median %v, worst %v (target 1 s; limit %v)", l.name, med, worst, latencyLimit(time.Second))
		}
	}

	// Secrets: injected over TLS, and a rotation applies at once.
	cp.must("PUT", tpath+"/secrets/web-key", map[string]any{"value": "sk-CANARY-one"})
	cp.must("POST", tpath+"/policies", map[string]any{"entry": map[string]any{"domain": "api.test", "allow_private": true, "tls_intercept": true,
		"credential": map[string]any{"header": "Authorization", "format": "Bearer {value}", "secret": "web-key"}}})
	seen := func(v string) bool {
		for _, r := range cd.in.Requests() {
			if strings.Join(r.Header["Authorization"], ",") == "Bearer "+v {
				return true
			}
		}
		return false
	}
	cd.until(`curl -s -m 2 -o /dev/null -w '%{http_code}' https://api.test/with-secret`, "200")
	if !seen("sk-CANARY-one") {
		t.Fatal("upstream did not get the control plane's secret")
	}
	cp.must("POST", tpath+"/secrets/web-key/rotate", map[string]any{"value": "sk-CANARY-two"})
	waitFor(t, "rotated secret injected", 5*time.Second, func() bool {
		cd.sh(`curl -s -m 2 -o /dev/null https://api.test/rotated`)
		return seen("sk-CANARY-two")
	})
	if out := cd.sh("env; cat /proc/1/environ 2>/dev/null"); strings.Contains(out, "sk-CANARY") {
		t.Error("secret visible in the sandbox")
	}

	// The agent's traffic reaches the control plane's logs.
	waitFor(t, "traffic in the control plane logs", 10*time.Second, func() bool {
		_, m := cp.do("GET", tpath+"/logs?q=with-secret&type=http", "", nil)
		items, _ := m["items"].([]any)
		return len(items) > 0
	})
	_, m := cp.do("GET", tpath+"/logs?type=dns&q=web.test", "", nil)
	if items, _ := m["items"].([]any); len(items) == 0 {
		t.Error("no dns events in the control plane logs")
	}
	_, m = cp.do("GET", tpath+"/logs?limit=1000", "", nil)
	for _, it := range m["items"].([]any) {
		if b := fmt.Sprint(it); strings.Contains(b, "sk-CANARY") {
			t.Fatalf("secret value in a shipped log entry: %s", b)
		}
	}

	// A restart command runs on the real sandbox and is reported.
	c := cp.must("POST", tpath+"/agents/"+agentID+"/commands", map[string]any{"command": "restart"})
	waitFor(t, "restart reported", 90*time.Second, func() bool {
		_, l := cp.do("GET", tpath+"/agents/"+agentID+"/commands", "", nil)
		for _, it := range l["items"].([]any) {
			if x := it.(map[string]any); x["id"] == c["id"] && x["status"] == "succeeded" {
				return true
			}
		}
		return false
	})
	if got := cd.sh(`curl -s -m 5 -o /dev/null -w '%{http_code}' https://api.test/after-restart`); got != "200" {
		t.Fatalf("after restart: %s", got)
	}

	// The control plane goes away: the policy stays enforced, the secret
	// for 5 minutes, then requests needing it fail closed.
	cp.stop()
	waitFor(t, "disconnected", 10*time.Second, func() bool { return !cd.c.Connected() })
	if got := cd.sh(proxyProbe); got != "403" {
		t.Fatalf("policy while disconnected: %s", got)
	}
	clock.Advance(4 * time.Minute)
	if got := cd.sh(`curl -s -m 5 -o /dev/null -w '%{http_code}' https://api.test/within-ttl`); got != "200" {
		t.Fatalf("within the secret TTL: %s", got)
	}
	clock.Advance(2 * time.Minute)
	if got := cd.sh(`curl -s -m 5 -o /dev/null -w '%{http_code}' https://api.test/after-ttl`); got != "502" {
		t.Fatalf("after the secret TTL: %s", got)
	}
	for _, r := range cd.in.Requests() {
		if r.RequestURI == "/after-ttl" {
			t.Fatal("a request went out without its credential")
		}
	}
}
