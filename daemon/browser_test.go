package daemon

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/internal/testutil/browsertest"
	"github.com/chromedp/chromedp"
)

// typeLine types a line into the visible tab's terminal.
func typeLine(line string) chromedp.Action[chromedp.Void] {
	return browsertest.TypeLine(".term-pane:not([style*='none']) .xterm-helper-textarea", line)
}

func TestBrowserAdminUI(t *testing.T) {
	if !adminui.UIBuilt() {
		if testutil.InCI() {
			t.Fatal("the web UI is not built: `make ui` must run before the tests")
		}
		t.Skip("web UI not built (make ui)")
	}
	f := newFixture(t)
	tok, err := adminui.RotateToken(filepath.Join(f.dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.d.Handler())
	t.Cleanup(srv.Close)
	pg := browsertest.New(t, 3*time.Minute, "")
	shot, do := pg.Shot, pg.Do
	waitJS := func(what, expr string) {
		t.Helper()
		pg.WaitJS(what, expr, 30*time.Second)
	}

	clear := func(sel string) chromedp.Action[chromedp.Void] {
		return chromedp.Evaluate[chromedp.Void](`(() => { const e = document.querySelector(` + "`" + sel + "`" + `); e.value = ''; e.dispatchEvent(new Event('input')); })()`)
	}

	// Log in: a wrong token is refused, the right one opens the dashboard.
	do("open", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	shot("login")
	do("wrong token", chromedp.SendKeys(chromedp.ID("token"), "cagent_admin_wrong"), chromedp.Click(chromedp.ID("login")))
	waitJS("login error", `document.querySelector('#login-error').textContent.includes('wrong admin token')`)
	do("login", clear("#token"), chromedp.SendKeys(chromedp.ID("token"), tok), chromedp.Click(chromedp.ID("login")))
	waitJS("dashboard", `!!document.querySelector('#component-sandbox .badge.running') && !!document.querySelector('#component-proxy .badge.ok')`)
	shot("dashboard")

	// Add a domain in the structured editor.
	do("config page", chromedp.Navigate(srv.URL+"/#/config"), chromedp.WaitVisible(chromedp.ID("add-domain")))
	do("add domain", chromedp.Click(chromedp.ID("add-domain")),
		chromedp.SendKeys(chromedp.CSS(`#domains .domain:last-child input[data-field="domain"]`), "api.test"),
		chromedp.Click(chromedp.CSS(`#domains .domain:last-child input[data-field="allow_private"]`)),
		chromedp.SendKeys(chromedp.CSS(`#domains .domain:last-child input[data-field="timeout"]`), "forever"),
		chromedp.Click(chromedp.ID("save-domains")))
	// An invalid value is shown on its entry and nothing is saved.
	waitJS("inline error", `(document.querySelector('#domains .domain:last-child [data-errors]')||{}).textContent?.includes('timeout')`)
	if f.d.Policy().Lookup("api.test") != nil {
		t.Fatal("invalid domain entry was applied")
	}
	shot("config-domain-error")
	do("fix timeout", clear(`#domains .domain:last-child input[data-field="timeout"]`),
		chromedp.SendKeys(chromedp.CSS(`#domains .domain:last-child input[data-field="timeout"]`), "30s"),
		chromedp.Click(chromedp.ID("save-domains")), chromedp.WaitVisible(chromedp.ID("save-ok")))
	if d := f.d.Policy().Lookup("api.test"); d == nil || !d.AllowPrivate {
		t.Fatalf("domain not applied: %+v", d)
	}
	shot("config-domains")

	// The YAML editor shows errors with their line and column.
	do("yaml tab", chromedp.Click(chromedp.ID("tab-yaml")), chromedp.WaitVisible(chromedp.ID("yaml")))
	do("bad yaml", chromedp.Evaluate[chromedp.Void](`(() => { const t = document.querySelector('#yaml'); t.value = t.value.replace('domains:', 'enforcement: sometimes\ndomains:'); t.dispatchEvent(new Event('input')); })()`),
		chromedp.Click(chromedp.ID("validate-yaml")))
	waitJS("yaml error", `/^3:14: enforcement: invalid value/.test((document.querySelector('#config-errors li')||{}).textContent||'')`)
	shot("config-yaml-error")

	// An agent's request appears in the live log.
	do("logs page", chromedp.Navigate(srv.URL+"/#/logs"), chromedp.WaitVisible(chromedp.ID("log-rows")))
	waitJS("live tail connected", `document.querySelector('#log-rows').dataset.live === '1'`)
	if got := f.curl("http://api.test/from-agent"); got != "200" {
		t.Fatalf("agent request: %s", got)
	}
	if got := f.curl("http://other.test/blocked"); got != "403" {
		t.Fatalf("blocked request: %s", got)
	}
	waitJS("live log row", `[...document.querySelectorAll('#log-rows tr[data-domain="api.test"]')].some(r => r.textContent.includes('/from-agent'))`)
	waitJS("blocked log row", `!!document.querySelector('#log-rows tr[data-domain="other.test"] .badge.deny')`)
	shot("logs")

	// Traffic: the blocked domain can be allowed after confirmation.
	do("traffic page", chromedp.Navigate(srv.URL+"/#/traffic"),
		chromedp.WaitVisible(chromedp.CSS(`#blocked tr[data-domain="other.test"] button[data-action="allow"]`)))
	shot("traffic")
	do("allow", chromedp.Click(chromedp.CSS(`#blocked tr[data-domain="other.test"] button[data-action="allow"]`)),
		chromedp.WaitVisible(chromedp.ID("modal-ok")), chromedp.Click(chromedp.ID("modal-ok")))
	deadline := time.Now().Add(10 * time.Second)
	for f.d.Policy().Lookup("other.test") == nil {
		if time.Now().After(deadline) {
			t.Fatal("allow action did not add other.test")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The terminal runs commands in the sandbox, in several tabs.
	do("terminal page", chromedp.Navigate(srv.URL+"/#/terminal"), chromedp.WaitVisible(chromedp.CSS(".xterm-helper-textarea")))
	time.Sleep(500 * time.Millisecond) // the shell starts
	do("type", typeLine("echo hello-$((6*7)) from $(hostname); stty size"))
	waitJS("terminal output", `document.querySelector('.term-pane:not([style*="none"]) .xterm-rows').textContent.includes('hello-42 from sandbox')`)
	do("type more", typeLine("id; ls -la /workspace; curl -s http://web.test/from-terminal | head -c 120; echo"))
	waitJS("terminal curl output", `document.querySelector('.term-pane:not([style*="none"]) .xterm-rows').textContent.includes('from-terminal')`)
	shot("terminal-shell")
	do("second tab", chromedp.Click(chromedp.ID("new-tab")))
	waitJS("two tabs", `document.querySelectorAll('.term-pane').length === 2`)
	time.Sleep(500 * time.Millisecond)
	do("type 2", typeLine("curl -s -o /dev/null -w 'agent-got-%{http_code}\\n' http://other.test/"))
	// other.test is now in the policy, so it is no longer "not allowed";
	// the fake internet's private address is still refused (no allow_private).
	waitJS("terminal curl", `document.querySelector('.term-pane:not([style*="none"]) .xterm-rows').textContent.includes('agent-got-403')`)
	if f.event(func(e *audit.Event) bool { return e.Host == "other.test" && e.Error == "forbidden_address" }) == nil {
		t.Error("other.test was not evaluated under the new policy")
	}
	shot("terminal")

	// Dashboard buttons: stop (it stays stopped), start, wipe after confirmation.
	do("dashboard again", chromedp.Navigate(srv.URL+"/#/dashboard"), chromedp.WaitVisible(chromedp.ID("sandbox-stop")), chromedp.Click(chromedp.ID("sandbox-stop")))
	waitJS("stopped", `!!document.querySelector('#component-sandbox .badge.stopped')`)
	shot("dashboard-stopped")
	do("start", chromedp.Click(chromedp.ID("sandbox-start")))
	waitJS("running again", `!!document.querySelector('#component-sandbox .badge.running')`)
	os.WriteFile(filepath.Join(f.ws, "junk"), []byte("x"), 0o644)
	do("wipe", chromedp.Click(chromedp.ID("sandbox-wipe")), chromedp.WaitVisible(chromedp.ID("wipe-workspace")),
		chromedp.Click(chromedp.ID("wipe-workspace")), chromedp.Click(chromedp.ID("modal-ok")))
	waitJS("wiped", `!!document.querySelector('#component-sandbox .badge.running') && [...document.querySelectorAll('.toast')].some(t => t.textContent.includes('wipe done'))`)
	if _, err := os.Stat(filepath.Join(f.ws, "junk")); !os.IsNotExist(err) {
		t.Errorf("workspace not emptied by wipe: %v", err)
	}

	// Log out: the API refuses the old session.
	do("logout", chromedp.WaitVisible(chromedp.ID("logout")), chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
}
