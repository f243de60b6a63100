package daemon

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/internal/fakeinet"
	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"github.com/cagent-dev/cagent/secretstore"
)

// fixture is a running daemon against a fake internet.
type fixture struct {
	t    *testing.T
	d    *Daemon
	in   *fakeinet.Internet
	dir  string
	ws   string
	path string
	rt   string
}

func policyYAML(in *fakeinet.Internet, runtime, ws string, extra string) string {
	return fmt.Sprintf(`dns:
  upstream: [%s]
domains:
  - domain: web.test
    allow_private: true
%ssandbox:
  runtime: %s
  workspace: %s
  subnet_pool: 10.209.96.0/20
`, in.DNS, extra, runtime, ws)
}

func newFixture(t *testing.T) *fixture { return newFixtureRuntime(t, "runc") }

func newFixtureRuntime(t *testing.T, runtime string) *fixture {
	t.Helper()
	testutil.RequireRoot(t)
	if runtime == "gvisor" {
		testutil.RequireCommand(t, "runsc")
	} else {
		testutil.RequireCommand(t, "runc")
	}
	testutil.RequireCommand(t, "curl")
	in := fakeinet.Start(t, fakeinet.Options{})
	dir := t.TempDir()
	f := &fixture{t: t, in: in, rt: runtime, dir: dir, ws: filepath.Join(dir, "ws"), path: filepath.Join(dir, "cagent.yaml")}
	if err := os.Mkdir(f.ws, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(f.ws, 0o777)
	f.write("")
	d, err := New(Config{PolicyPath: f.path, StateDir: filepath.Join(dir, "state"), Agent: "test-agent",
		Upstreams: []netip.AddrPort{in.DNS}, RootCAs: in.CAPool, HealthInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Boot(context.Background()); err != nil {
		d.Close()
		t.Fatal(err)
	}
	f.d = d
	t.Cleanup(func() {
		id := ""
		if st := f.stack(); st != nil {
			id = st.long.ID()
		}
		d.Close()
		if id != "" && netsetup.Exists("cagent-"+id) {
			t.Errorf("netns cagent-%s left after Close", id)
		}
	})
	f.waitRunning()
	return f
}

func (f *fixture) write(extra string) {
	f.t.Helper()
	tmp := f.path + ".new"
	if err := os.WriteFile(tmp, []byte(policyYAML(f.in, f.rt, f.ws, extra)), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) stack() *stack {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	return f.d.stack
}

func (f *fixture) component(name string) adminui.ComponentStatus {
	for _, c := range f.d.Status(context.Background()).Components {
		if c.Name == name {
			return c
		}
	}
	f.t.Fatalf("no component %s", name)
	return adminui.ComponentStatus{}
}

func (f *fixture) waitFor(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s; status %+v", what, f.d.Status(context.Background()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fixture) waitRunning() {
	f.t.Helper()
	f.waitFor("all running", func() bool {
		for _, c := range f.d.Status(context.Background()).Components {
			if c.State != adminui.StateRunning || !c.Healthy {
				return false
			}
		}
		return true
	})
}

// sh runs a shell command in the sandbox and returns its output.
func (f *fixture) sh(cmd string) (string, int) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := f.d.Exec(ctx, adminui.ExecRequest{Cmd: []string{"/bin/sh", "-c", cmd}})
	if err != nil {
		f.t.Fatalf("exec %q: %v", cmd, err)
	}
	defer p.Close()
	out, _ := io.ReadAll(p)
	code, _ := p.Wait()
	return string(out), code
}

// curl returns the HTTP status the agent gets for url.
func (f *fixture) curl(args string) string {
	f.t.Helper()
	out, _ := f.sh("curl -s -m 10 -o /dev/null -w '%{http_code}' " + args)
	return strings.TrimSpace(out)
}

func (f *fixture) event(match func(e *audit.Event) bool) *audit.Event {
	for _, e := range f.d.Events().Query(adminui.Filter{Limit: 5000}) {
		if match(&e) {
			return &e
		}
	}
	return nil
}

func TestAgentTrafficIsEnforcedAndAudited(t *testing.T) {
	for _, rt := range []string{"runc", "gvisor"} {
		t.Run(rt, func(t *testing.T) { testAgentTraffic(t, newFixtureRuntime(t, rt)) })
	}
}

func testAgentTraffic(t *testing.T, f *fixture) {
	if got := f.curl("http://web.test/hello"); got != "200" {
		t.Fatalf("allowed via explicit proxy: %s", got)
	}
	if got := f.curl("http://api.test/"); got != "403" {
		t.Fatalf("denied via explicit proxy: %s", got)
	}
	// Transparent: the sandbox's DNS answers with the gateway, port 80 is routed by Host.
	if got := f.curl("--noproxy '*' http://web.test/t"); got != "200" {
		t.Fatalf("transparent: %s", got)
	}
	// Escape: a direct connection to the fake internet fails.
	out, code := f.sh(fmt.Sprintf("curl -s -m 3 --noproxy '*' http://%s/ || echo BLOCKED", f.in.Web))
	if code != 0 || !strings.Contains(out, "BLOCKED") {
		t.Errorf("direct connection: %q %d", out, code)
	}
	for _, want := range []struct {
		what string
		fn   func(e *audit.Event) bool
	}{
		{"allowed http", func(e *audit.Event) bool {
			return e.Type == "http" && e.Host == "web.test" && e.Decision == "allow" && e.Path == "/hello"
		}},
		{"denied http", func(e *audit.Event) bool { return e.Type == "http" && e.Host == "api.test" && e.Decision == "deny" }},
		{"dns", func(e *audit.Event) bool { return e.Type == "dns" && strings.HasPrefix(e.QName, "web.test") }},
		{"sandbox start", func(e *audit.Event) bool { return e.Type == "sandbox" && e.Action == "start" }},
		{"exec", func(e *audit.Event) bool { return e.Type == "command" && e.Action == "exec" }},
	} {
		if f.event(want.fn) == nil {
			t.Errorf("no %s event", want.what)
		}
	}
	// The same events are in the hash-chained files.
	files, _ := filepath.Glob(filepath.Join(f.dir, "state", "audit", "audit-*.jsonl"))
	res, err := audit.VerifyFiles(files...)
	if err != nil || res.Broken != nil || res.Events < 5 || res.Anchor != "" {
		t.Errorf("audit files: %+v %v", res, err)
	}
}

func TestPolicyReloadLiveKeepsTunnels(t *testing.T) {
	f := newFixture(t)
	// A CONNECT tunnel opened before the change, from the host side of the gateway.
	gw := f.stack().gw
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(gw, 3128).String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT web.test:443 HTTP/1.1\r\nHost: web.test:443\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(&bufConn{c, br}, &tls.Config{ServerName: "web.test", RootCAs: f.in.CAPool})
	get := func() error {
		fmt.Fprintf(tc, "GET /tunnel HTTP/1.1\r\nHost: web.test\r\n\r\n")
		r, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != 200 {
			return fmt.Errorf("status %d", r.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}

	if got := f.curl("http://api.test/"); got != "403" {
		t.Fatalf("before: %s", got)
	}
	start := time.Now()
	f.write("  - domain: api.test\n    allow_private: true\n")
	f.waitFor("policy applied", func() bool { return f.d.Policy().Lookup("api.test") != nil })
	if el := time.Since(start); el > time.Second {
		t.Errorf("policy applied after %v, want < 1s", el)
	} else {
		t.Logf("policy edit applied after %v", el)
	}
	if got := f.curl("http://api.test/"); got != "200" {
		t.Errorf("after reload: %s", got)
	}
	// Invalid change: rejected, the running policy stays.
	os.WriteFile(f.path, []byte("domains:\n  - domain: [\n"), 0o644)
	f.waitFor("reload error", func() bool { return f.d.watcher.LastError() != nil })
	if got := f.curl("http://api.test/"); got != "200" {
		t.Errorf("after invalid change: %s", got)
	}
	if err := get(); err != nil {
		t.Errorf("tunnel dropped by reloads: %v", err)
	}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func TestCrashedComponentsRestart(t *testing.T) {
	f := newFixture(t)
	// The proxy's listener dies: the proxy is restarted on the same gateway.
	st := f.stack()
	st.mu.Lock()
	st.svc["proxy"].lns[0]()
	st.mu.Unlock()
	f.waitFor("proxy restarted", func() bool {
		c := f.component("proxy")
		return c.Restarts == 1 && c.State == adminui.StateRunning && c.Healthy
	})
	if c := f.component("proxy"); !strings.Contains(c.LastError, "stopped") {
		t.Errorf("last error %q", c.LastError)
	}
	if got := f.curl("http://web.test/"); got != "200" {
		t.Errorf("after proxy restart: %s", got)
	}
	// The sandbox's init is killed: the sandbox is recreated.
	old := st.long.ID()
	out, err := exec.Command("runc", "--root", filepath.Join(f.dir, "state", "sandbox", "runc"), "kill", "cagent-"+old, "KILL").CombinedOutput()
	if err != nil {
		t.Fatalf("runc kill: %v %s", err, out)
	}
	f.waitFor("sandbox restarted", func() bool {
		c := f.component("sandbox")
		return c.Restarts == 1 && c.State == adminui.StateRunning
	})
	f.waitRunning()
	// The lease is freed before the new sandbox allocates, so the new one
	// may reuse the subnet; otherwise the old namespace must be gone.
	if cur := f.stack().long.ID(); cur != old && netsetup.Exists("cagent-"+old) {
		t.Errorf("crashed sandbox's netns %s left", old)
	}
	if got := f.curl("http://web.test/"); got != "200" {
		t.Errorf("after sandbox restart: %s", got)
	}
}

func TestStopStaysStoppedAndWipe(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.sh("echo keep > /workspace/file.txt")
	if err := f.d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // five health intervals
	for _, c := range f.d.Status(ctx).Components {
		if c.State != adminui.StateStopped {
			t.Errorf("%s is %s after stop", c.Name, c.State)
		}
	}
	if _, err := f.d.Exec(ctx, adminui.ExecRequest{Cmd: []string{"true"}}); err == nil {
		t.Error("exec in a stopped sandbox succeeded")
	}
	if err := f.d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitRunning()
	if out, _ := f.sh("cat /workspace/file.txt"); strings.TrimSpace(out) != "keep" {
		t.Errorf("workspace lost by stop/start: %q", out)
	}
	if err := f.d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitRunning()
	f.sh("touch /tmp/scratch")
	if err := f.d.Wipe(ctx, false); err != nil {
		t.Fatal(err)
	}
	f.waitRunning()
	if out, _ := f.sh("ls /tmp/scratch 2>&1; cat /workspace/file.txt"); !strings.Contains(out, "No such file") || !strings.Contains(out, "keep") {
		t.Errorf("wipe without emptying: %q", out)
	}
	if err := f.d.Wipe(ctx, true); err != nil {
		t.Fatal(err)
	}
	f.waitRunning()
	if ents, _ := os.ReadDir(f.ws); len(ents) != 0 {
		t.Errorf("workspace not emptied: %v", ents)
	}
	if _, err := os.Stat(f.ws); err != nil {
		t.Errorf("workspace directory removed: %v", err)
	}
}

func TestInterceptionEnabledLive(t *testing.T) {
	f := newFixture(t)
	// The sandbox trusts the data plane's CA from the start, so turning on
	// interception later needs no restart.
	out, _ := f.sh(`test -s /run/cagent/ca.pem && echo "$SSL_CERT_FILE"`)
	if strings.TrimSpace(out) == "" {
		t.Fatalf("CA not installed: %q", out)
	}
	// Not intercepted: a plain tunnel, the agent sees the upstream's own
	// certificate (from the fake internet's test CA, hence -k).
	if got := f.curl("-k https://web.test/"); got != "200" {
		t.Fatalf("https tunnel: %s", got)
	}
	f.write("  - domain: api.test\n    allow_private: true\n    tls_intercept: true\n    allowed_paths: [/ok/*]\n")
	f.waitFor("policy applied", func() bool { return f.d.Policy().Lookup("api.test") != nil })
	if got := f.curl("https://api.test/ok/x"); got != "200" {
		t.Errorf("intercepted allowed path: %s", got)
	}
	if got := f.curl("https://api.test/secret"); got != "403" {
		t.Errorf("intercepted denied path: %s", got)
	}
	if e := f.event(func(e *audit.Event) bool { return e.Host == "api.test" && e.Intercepted && e.Path == "/ok/x" }); e == nil {
		t.Error("no intercepted event")
	}
}

// The agent cannot reach a service on the host, such as an admin UI
// listening on all addresses: only the gateway's proxy and DNS ports are open.
func TestAgentCannotReachHostServices(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hits := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	gw := f.stack().gw
	for _, target := range []string{gw.String(), "127.0.0.1", f.in.HostAddr.String()} {
		out, _ := f.sh(fmt.Sprintf("curl -s -m 3 --noproxy '*' http://%s:%d/healthz && echo REACHED || echo REFUSED", target, port))
		if !strings.Contains(out, "REFUSED") {
			t.Errorf("agent reached host service at %s:%d: %q", target, port, out)
		}
	}
	// Through the proxy, the gateway and loopback are forbidden addresses.
	if got := f.curl(fmt.Sprintf("http://%s:%d/healthz", gw, port)); got != "403" {
		t.Errorf("via proxy: %s", got)
	}
	select {
	case h := <-hits:
		t.Errorf("host service received a connection from %s", h)
	default:
	}
}

func TestSandboxSettingsChangeAskForRestart(t *testing.T) {
	f := newFixture(t)
	if m := f.component("sandbox").Message; m != "" {
		t.Fatalf("message before change: %q", m)
	}
	// An env change is a sandbox setting: it waits for a restart.
	y := strings.Replace(policyYAML(f.in, f.rt, f.ws, ""), "sandbox:\n", "sandbox:\n  env: {GREETING: hi}\n", 1)
	os.WriteFile(f.path+".new", []byte(y), 0o644)
	os.Rename(f.path+".new", f.path)
	f.waitFor("restart hint", func() bool { return strings.Contains(f.component("sandbox").Message, "restart") })
	if out, _ := f.sh("echo $GREETING"); strings.TrimSpace(out) != "" {
		t.Errorf("env applied without restart: %q", out)
	}
	if err := f.d.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.waitRunning()
	if out, _ := f.sh("echo $GREETING"); strings.TrimSpace(out) != "hi" {
		t.Errorf("env after restart: %q", out)
	}
	f.waitFor("hint cleared", func() bool { return f.component("sandbox").Message == "" })
}

// A secret stored with `cagent secret set` (the secret store) is injected by
// the daemon's proxy; the sandbox has no trace of it.
func TestStandaloneSecretInjected(t *testing.T) {
	f := newFixture(t)
	const canary = "sk-DAEMON-CANARY-5c1e"
	st, err := secretstore.Open(filepath.Join(f.dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Set("WEB_KEY", canary); err != nil {
		t.Fatal(err)
	}
	// Credentials go only over TLS: the entry intercepts HTTPS.
	f.write("  - domain: api.test\n    allow_private: true\n    tls_intercept: true\n    credential: {header: Authorization, format: \"Bearer {value}\", secret: WEB_KEY}\n")
	f.waitFor("policy applied", func() bool { return f.d.Policy().Lookup("api.test") != nil })
	if got := f.curl("-H 'Authorization: agent-guess' https://api.test/with-secret"); got != "200" {
		t.Fatalf("request: %s", got)
	}
	var seen bool
	for _, r := range f.in.Requests() {
		if r.RequestURI == "/with-secret" {
			seen = true
			if got := strings.Join(r.Header["Authorization"], ","); got != "Bearer "+canary {
				t.Errorf("upstream saw Authorization %q", got)
			}
		}
	}
	if !seen {
		t.Fatal("request did not reach the upstream")
	}
	// Not in the sandbox's environment, files or processes.
	out, _ := f.sh("env; cat /proc/1/environ 2>/dev/null; grep -rs " + canary + " /workspace /tmp /run /etc 2>/dev/null | head -1")
	if strings.Contains(out, canary) {
		t.Errorf("secret visible in the sandbox: %q", out)
	}
	// Audit events name the credential, never its value.
	e := f.event(func(e *audit.Event) bool { return e.Path == "/with-secret" })
	if e == nil || e.Credential == "" {
		t.Errorf("event %+v", e)
	}
	files, _ := filepath.Glob(filepath.Join(f.dir, "state", "audit", "*.jsonl"))
	for _, p := range files {
		if b, _ := os.ReadFile(p); strings.Contains(string(b), canary) {
			t.Errorf("secret in audit file %s", p)
		}
	}
}

func TestStartFailureReportedAndRetried(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(f.dir, "not-a-dir")
	os.WriteFile(notDir, nil, 0o644)
	good := f.ws
	f.ws = notDir
	f.write("")
	f.waitFor("bad policy applied", func() bool { return f.d.Policy().Sandbox.Workspace == notDir })
	err := f.d.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "workspace") {
		t.Fatalf("start with a bad workspace: %v", err)
	}
	c := f.component("sandbox")
	if c.State != adminui.StateCrashed || !strings.Contains(c.LastError, "workspace") || !strings.Contains(c.Message, "retrying") {
		t.Errorf("status %+v", c)
	}
	// Fixing the policy is enough: the supervisor retries by itself.
	f.ws = good
	f.write("")
	f.waitRunning()
}

// Start and Stop from several admins at once end in a consistent state.
func TestConcurrentLifecycleRequests(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_ = f.d.Stop(ctx)
			} else {
				_ = f.d.Start(ctx)
			}
		}()
	}
	wg.Wait()
	if err := f.d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, c := range f.d.Status(ctx).Components {
		if c.State != adminui.StateStopped {
			t.Errorf("%s is %s after the final stop", c.Name, c.State)
		}
	}
	if err := f.d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitRunning()
	if got := f.curl("http://web.test/"); got != "200" {
		t.Errorf("after the storm: %s", got)
	}
}
