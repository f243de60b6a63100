package adminui

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/cagent-dev/cagent/internal/webui"
)

// The web UI is built by `make ui` (npm ci && vite build) into web/dist and
// embedded here. web/dist/.keep is committed so that this compiles without
// a build; the server then says so instead of serving a blank page.
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

const notBuiltPage = `<!doctype html><meta charset="utf-8"><title>Cagent admin</title>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>The admin UI was not built into this binary</h1>
<p>This cagent was compiled without its web UI. Build it with <code>make ui build</code>
(needs Node.js and npm), or use the admin API under <code>/api/</code> directly.</p>`

func uiHandler() http.Handler { return app }

// UIBuilt reports whether the web UI was built into this binary.
func UIBuilt() bool { return app.Built() }
