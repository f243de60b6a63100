package controlui_test

import (
	"bytes"
	"context"
	"github.com/cagent-dev/cagent/connect/connecttest"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/control"
	"github.com/cagent-dev/cagent/controlui"
	"github.com/cagent-dev/cagent/daemon"
	"github.com/cagent-dev/cagent/internal/fakeinet"
	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/internal/testutil/browsertest"
	"github.com/cagent-dev/cagent/sandbox/firewall/firewalltest"
	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.Cleanup(firewalltest.Exit)) }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startCP runs a real control plane on loopback and returns its URL and
// the bootstrap super-admin token.
func startCP(t *testing.T) (string, string) {
	t.Helper()
	out := &syncBuf{}
	ready := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- control.Run(ctx, control.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Stdout: out, Ready: func(a net.Addr) { ready <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("control.Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("control.Run: %v", err)
		}
	})
	var super string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "cagent_") {
			super = strings.TrimSpace(l)
		}
	}
	return "http://" + addr.String(), super
}

func TestUIServesAppWithStrictHeaders(t *testing.T) {
	url, _ := startCP(t)
	for _, p := range []string{"/", "/some/client/route"} {
		resp, err := http.Get(url + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", p, resp.Header)
		}
		if controlui.Built() && (resp.StatusCode != 200 || !strings.Contains(string(b), "<div id=\"app\">")) {
			t.Errorf("%s: %d %s", p, resp.StatusCode, b)
		}
		if !controlui.Built() && resp.StatusCode != 503 {
			t.Errorf("%s unbuilt: %d", p, resp.StatusCode)
		}
	}
	// The API is still the API: unknown paths answer JSON 404s.
	resp, err := http.Get(url + "/api/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("api 404: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// connectedDataPlane runs `cagent up --control-plane` in-process: the daemon
// with a runc sandbox and a fake internet, managed by a connect.Client.
func connectedDataPlane(t *testing.T, cpURL, token string) (*daemon.Daemon, *fakeinet.Internet) {
	t.Helper()
	d, _, in := connecttest.Start(t, connecttest.Options{URL: cpURL, Token: token, SubnetPool: "10.209.128.0/20"})
	return d, in
}

func curl(t *testing.T, d *daemon.Daemon, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := d.Exec(ctx, adminui.ExecRequest{Cmd: []string{"/bin/sh", "-c", "curl -s -m 5 -o /dev/null -w '%{http_code}' " + url}})
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	defer p.Close()
	out, _ := io.ReadAll(p)
	p.Wait()
	return strings.TrimSpace(string(out))
}

// typeLine types a line into the page's terminal.
func typeLine(line string) chromedp.Action[chromedp.Void] {
	return browsertest.TypeLine("#term-host .xterm-helper-textarea", line)
}

// TestBrowserMainFlow: in real headless Chromium, a super admin creates a
// tenant and an admin token; the admin registers an agent and adds a
// policy; a connected data plane (real sandbox) enforces it; the agent's
// traffic shows in the control plane's logs; a restart command runs.
func TestBrowserMainFlow(t *testing.T) {
	if !controlui.Built() {
		if testutil.InCI() {
			t.Fatal("the control-plane web UI is not built: `make ui` must run before the tests")
		}
		t.Skip("web UI not built (make ui)")
	}
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	testutil.RequireCommand(t, "curl")
	url, super := startCP(t)
	pg := browsertest.New(t, 4*time.Minute, "controlui-")
	ctx, shot, do, waitJS := pg.Ctx, pg.Shot, pg.Do, pg.WaitJS
	value := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("value of %s: %v", sel, err)
		}
		return v
	}
	// jsClick clicks in the page itself: the Agents and Logs pages
	// re-render every 5 s, and a node replaced between chromedp's query and
	// its click would be waited for forever.
	jsClick := func(sel string) chromedp.Action[chromedp.Void] {
		return chromedp.Evaluate[chromedp.Void](`document.querySelector(` + "`" + sel + "`" + `).click()`)
	}
	login := func(tok string) {
		do("login", chromedp.WaitVisible(chromedp.ID("token")), chromedp.SetValue(chromedp.ID("token"), tok), chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.ID("logout")))
	}

	// A wrong token is refused.
	do("open", chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	do("wrong token", chromedp.SetValue(chromedp.ID("token"), "cagent_000000000000000000000000_wrong"), chromedp.Click(chromedp.ID("login")))
	waitJS("login error", `document.querySelector('#login-error').textContent.includes('not accepted')`, 10*time.Second)
	shot("login")

	// Super admin: a tenant, then an admin token for it.
	login(super)
	do("tenants", chromedp.WaitVisible(chromedp.ID("tenant-name")), chromedp.SetValue(chromedp.ID("tenant-name"), "acme"), chromedp.Click(chromedp.ID("tenant-create")))
	waitJS("tenant selected", `document.querySelector('#tenant-select')?.selectedOptions[0]?.textContent === 'acme'`, 10*time.Second)
	do("tenants page", chromedp.Navigate(url+"/#/tenants"), chromedp.WaitVisible(chromedp.ID("tenants-search")))
	shot("tenants")
	do("tokens page", chromedp.Navigate(url+"/#/tokens"), chromedp.WaitVisible(chromedp.ID("token-kind")),
		chromedp.SetValue(chromedp.ID("token-kind"), "admin"), chromedp.SetValue(chromedp.ID("token-name"), "alice"),
		chromedp.Click(chromedp.ID("token-create")), chromedp.WaitVisible(chromedp.ID("once-value")))
	admin := value("#once-value")
	if !strings.HasPrefix(admin, "cagent_") {
		t.Fatalf("admin token %q", admin)
	}
	do("close", chromedp.Click(chromedp.ID("once-close")), chromedp.Click(chromedp.ID("logout")))

	// Admin: register an agent, start its data plane.
	login(admin)
	do("agents", chromedp.Navigate(url+"/#/agents"), chromedp.WaitVisible(chromedp.ID("agent-name")),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#agent-name').value = 'box-1'`), jsClick(`#agent-create`), chromedp.WaitVisible(chromedp.ID("once-value")))
	agentTok := value("#once-value")
	do("close agent token", chromedp.Click(chromedp.ID("once-close")))
	d, in := connectedDataPlane(t, url, agentTok)
	waitJS("agent online", `document.querySelector('[data-agent-online="box-1"]')?.textContent === 'online'`, 60*time.Second)
	shot("agents")

	// A shell in the agent's sandbox from the control plane's Terminal
	// page, relayed over the data plane's own connection.
	do("terminal", jsClick(`[data-terminal="box-1"]`), chromedp.WaitVisible(chromedp.ID("term-host")))
	waitJS("terminal connected", `document.querySelector('#term-status')?.textContent === 'connected'`, 30*time.Second)
	do("type", typeLine("echo from-cp-$((6*7))"))
	waitJS("terminal output", `document.querySelector('#term-host .xterm-rows').textContent.includes('from-cp-42')`, 20*time.Second)
	shot("terminal")
	do("exit", typeLine("exit 3"))
	waitJS("terminal exit", `document.querySelector('#term-host .xterm-rows').textContent.includes('[process exited with status 3]')`, 20*time.Second)

	if got := curl(t, d, "http://web.test/before-policy"); got != "403" {
		t.Fatalf("before the policy: %s", got)
	}

	// A tenant-wide policy, enforced by the data plane's proxy.
	do("policies", chromedp.Navigate(url+"/#/policies"), chromedp.WaitVisible(chromedp.ID("policy-domain")),
		chromedp.SetValue(chromedp.ID("policy-domain"), "web.test"), chromedp.SetValue(chromedp.ID("policy-entry"), `{"allow_private": true}`),
		chromedp.Click(chromedp.ID("policy-create")))
	waitJS("policy listed", `[...document.querySelectorAll('#policies td b')].some(b => b.textContent === 'web.test')`, 10*time.Second)
	shot("policies")
	deadline := time.Now().Add(10 * time.Second)
	for curl(t, d, "http://web.test/from-agent") != "200" {
		if time.Now().After(deadline) {
			t.Fatal("the connected data plane does not enforce the policy made in the UI")
		}
	}
	if got := curl(t, d, "http://api.test/not-allowed"); got != "403" {
		t.Fatalf("other domain: %s", got)
	}
	seen := false
	for _, r := range in.Requests() {
		seen = seen || r.RequestURI == "/from-agent"
	}
	if !seen {
		t.Fatal("the request did not reach the fake internet")
	}

	// Edit the entry: a denied path, enforced as well.
	do("edit policy", chromedp.Click(chromedp.CSS(`[data-edit="web.test"]`)),
		chromedp.SetValue(chromedp.ID("policy-entry"), `{"allow_private": true, "denied_paths": ["/blocked*"]}`),
		chromedp.Click(chromedp.ID("policy-create")))
	waitJS("edited policy listed", `document.querySelector('#policies').textContent.includes('/blocked*')`, 10*time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for curl(t, d, "http://web.test/blocked-path") != "403" {
		if time.Now().After(deadline) {
			t.Fatal("the edited policy is not enforced")
		}
	}
	if got := curl(t, d, "http://web.test/still-allowed"); got != "200" {
		t.Fatalf("after the edit: %s", got)
	}

	// A secret: write-only.
	do("secrets", chromedp.Navigate(url+"/#/secrets"), chromedp.WaitVisible(chromedp.ID("secret-name")),
		chromedp.SetValue(chromedp.ID("secret-name"), "web-key"), chromedp.SetValue(chromedp.ID("secret-value"), "sk-UI-CANARY"),
		chromedp.Click(chromedp.ID("secret-set")))
	waitJS("secret listed", `[...document.querySelectorAll('#secrets td b')].some(b => b.textContent === 'web-key') && !document.body.innerHTML.includes('sk-UI-CANARY')`, 10*time.Second)

	// The agent's traffic in the control plane's logs, with analytics.
	do("logs", chromedp.Navigate(url+"/#/logs"), chromedp.WaitVisible(chromedp.ID("logs-q")))
	waitJS("agent traffic in logs", `[...document.querySelectorAll('tr.log-row')].some(r => r.textContent.includes('web.test/from-agent')) &&
		[...document.querySelectorAll('tr.log-row')].some(r => r.textContent.includes('api.test/not-allowed') && r.textContent.includes('deny'))`, 30*time.Second)
	waitJS("event times", `[...document.querySelectorAll('tr.log-row td:first-child')].every(td => td.textContent.startsWith('20'))`, 5*time.Second)
	waitJS("top domains", `[...document.querySelectorAll('#top-domains td')].some(td => td.textContent === 'web.test')`, 5*time.Second)
	shot("logs")
	do("filter deny", chromedp.Evaluate[chromedp.Void](`(() => { const s = document.querySelector('#logs-decision'); s.value = 'deny'; s.dispatchEvent(new Event('change')); })()`))
	waitJS("filtered", `[...document.querySelectorAll('tr.log-row')].length > 0 && [...document.querySelectorAll('tr.log-row')].every(r => r.textContent.includes('deny'))`, 10*time.Second)

	// A restart from the agents page, reported back.
	do("agents again", chromedp.Navigate(url+"/#/agents"), chromedp.WaitVisible(chromedp.CSS(`[data-cmd="box-1:restart"]`)),
		jsClick(`[data-cmd="box-1:restart"]`))
	waitJS("command sent", `[...document.querySelectorAll('.toast')].some(t => t.textContent.includes('restart sent'))`, 10*time.Second)
	do("history", jsClick(`[data-history="box-1"]`), chromedp.WaitVisible(chromedp.ID("command-list")))
	// The page refreshes every 5 s, the command list with it.
	waitJS("restart succeeded", `[...document.querySelectorAll('#command-list .badge')].some(b => b.textContent === 'succeeded')`, 90*time.Second)
	shot("commands")

	// Audit trail shows who did what.
	do("audit", chromedp.Navigate(url+"/#/audit"), chromedp.WaitVisible(chromedp.ID("audit-search")))
	waitJS("audit rows", `['policy.create', 'secret.put', 'agent.create', 'command.create', 'terminal.open', 'terminal.close'].every(a => document.querySelector('#audit').textContent.includes(a.split('.')[0]))`, 10*time.Second)
	shot("audit")
}
