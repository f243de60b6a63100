// Package browsertest drives the web UIs' browser tests: it starts Debian's
// chromium headless with a fresh profile and gives each test the steps it
// needs (actions with a deadline, JavaScript waits polled from Go,
// screenshots into testdata-artifacts). It is its own package, not part of
// testutil, so the many tests that import testutil do not link chromedp.
package browsertest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

// ArtifactsDir is where the browser tests leave their screenshots: the
// repository's gitignored testdata-artifacts/screenshots (tests run in a
// package directory one level down; CAGENT_ARTIFACTS overrides).
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CAGENT_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "testdata-artifacts", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Launch starts chromium (skipping the test when it is missing, failing
// under CI) headless, with a fresh profile in a temporary directory and no
// background traffic. Hostnames other than 127.0.0.1 are made
// unresolvable, so the browser cannot reach the machine's resolver. The
// returned context has no deadline (a deadline on the first run would bound
// the browser's whole life); the browser stops at the end of the test.
func Launch(t testing.TB) context.Context {
	t.Helper()
	path := testutil.RequireCommand(t, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider"),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(1400, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// Page is a launched browser with the steps of a test.
type Page struct {
	t testing.TB
	// Ctx is the browser's context bounded by the whole test's budget; use
	// it for chromedp calls of one's own.
	Ctx context.Context
	// Browser is the browser's context without a deadline.
	Browser context.Context
	// StepTimeout bounds each Do (default 60 s).
	StepTimeout time.Duration
	shots       string
	prefix      string
}

// New launches a browser for a test that may take budget in all. Its
// screenshots are named prefix+name+".png" in ArtifactsDir.
func New(t testing.TB, budget time.Duration, prefix string) *Page {
	t.Helper()
	b := Launch(t)
	ctx, cancel := context.WithTimeout(b, budget)
	t.Cleanup(cancel)
	return &Page{t: t, Ctx: ctx, Browser: b, StepTimeout: 60 * time.Second, shots: ArtifactsDir(t), prefix: prefix}
}

// Shot saves a screenshot after letting the page settle. It has its own
// deadline: a screenshot after a timed-out step must not hide that step's
// error.
func (p *Page) Shot(name string) {
	p.t.Helper()
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(p.Browser, 20*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(p.shots, p.prefix+name+".png"), buf, 0o644); err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
	}
}

func (p *Page) failed(what string, format string, args ...any) {
	p.t.Helper()
	p.t.Errorf(format, args...)
	p.Shot("failed-" + strings.ReplaceAll(what, " ", "-"))
	p.t.FailNow()
}

// Do runs the steps within StepTimeout, failing the test (with a
// screenshot) if one fails.
func (p *Page) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.Ctx, p.StepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.failed(what, "%s: %v", what, err)
	}
}

// WaitJS waits up to d for expr to be true. It polls from Go, each
// evaluation with its own deadline, so a page that re-renders meanwhile
// cannot leave the wait hanging on a replaced node.
func (p *Page) WaitJS(what, expr string, d time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(p.Ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.failed(what, "waiting for %s: last result %v, %v", what, ok, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TypeLine types a line into the xterm.js terminal whose helper textarea
// sel selects. SendKeys would send each character twice to xterm.js (key
// and char events), so the text is inserted as IME input and Enter is a
// bare key press.
func TypeLine(sel, line string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if err := chromedp.Do(ctx, chromedp.Focus(chromedp.CSS(sel))); err != nil {
			return chromedp.Void{}, err
		}
		if _, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: line}); err != nil {
			return chromedp.Void{}, err
		}
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{
				Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
			}); err != nil {
				return chromedp.Void{}, err
			}
		}
		return chromedp.Void{}, nil
	}
}
