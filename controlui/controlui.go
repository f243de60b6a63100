// Package controlui is the control plane's web UI: a single-page app
// (controlui/web, built by `make ui` with Vite) embedded in the binary and
// served at / by `cagent control serve`. It talks to the REST API under
// /api/v1 with the token the user logs in with; it holds no data itself.
package controlui

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/cagent-dev/cagent/internal/webui"
)

// web/dist/.keep is committed so that this compiles without a build; the
// handler then says the UI was not built instead of serving a blank page.
//
//go:embed all:web/dist
var distFS embed.FS

var app = func() *webui.App {
	sub, err := fs.Sub(distFS, "web/dist")
	if err != nil {
		panic(err) // the path is a constant
	}
	return webui.New(sub, notBuiltPage)
}()

// Built reports whether the web UI was built into this binary.
func Built() bool { return app.Built() }

const notBuiltPage = `<!doctype html><meta charset="utf-8"><title>Cagent control plane</title>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>The control-plane web UI was not built into this binary</h1>
<p>Build it with <code>make ui build</code> (needs Node.js and npm), or use the REST API
under <code>/api/v1</code> (<a href="/api/v1/openapi.json">OpenAPI</a>).</p>`

// Handler serves the UI's files with strict security headers. Unknown
// paths fall back to the app (client-side routes).
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		// Scripts and connections only from this origin: a value from the
		// API can never run as code. Inline style attributes are used by
		// the app's charts.
		hd.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			hd.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		app.ServeHTTP(w, r)
	})
}
