package browsertest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// recorder stands in for a test whose failures we want to see, not suffer.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errs   []string
	failed bool
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) FailNow() {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
	runtime.Goexit()
}

func TestPageWaitsAndFails(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CAGENT_ARTIFACTS", dir)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The flag appears late, as after a fetch.
		fmt.Fprint(w, `<!doctype html><p id="p">hi</p><script>setTimeout(() => { window.ready = true }, 300)</script>`)
	}))
	t.Cleanup(srv.Close)
	pg := New(t, time.Minute, "bt-")
	pg.Do("open", chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.ID("p")))
	pg.WaitJS("ready", `window.ready === true`, 10*time.Second)
	pg.Shot("ok")
	if _, err := os.Stat(filepath.Join(dir, "bt-ok.png")); err != nil {
		t.Fatal(err)
	}

	// A wait that never holds fails the test, with a screenshot.
	rec := &recorder{TB: t}
	bad := *pg
	bad.t = rec
	done := make(chan struct{})
	go func() {
		defer close(done)
		bad.WaitJS("never", `window.nope === true`, 500*time.Millisecond)
	}()
	<-done
	if !rec.failed || len(rec.errs) == 0 {
		t.Fatalf("a wait that never holds did not fail: %v", rec.errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "bt-failed-never.png")); err != nil {
		t.Fatal(err)
	}
}
