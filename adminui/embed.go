package adminui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// The web UI is built by `make ui` (npm ci && vite build) into web/dist and
// embedded here. web/dist/.keep is committed so that this compiles without
// a build; the server then says so instead of serving a blank page.
//
//go:embed all:web/dist
var distFS embed.FS

func dist() fs.FS {
	sub, err := fs.Sub(distFS, "web/dist")
	if err != nil {
		panic(err) // the path is a constant
	}
	return sub
}

func uiBuilt() bool {
	_, err := fs.Stat(dist(), "index.html")
	return err == nil
}

const notBuiltPage = `<!doctype html><meta charset="utf-8"><title>Cagent admin</title>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>The admin UI was not built into this binary</h1>
<p>This cagent was compiled without its web UI. Build it with <code>make ui build</code>
(needs Node.js and npm), or use the admin API under <code>/api/</code> directly.</p>`

func uiHandler() http.Handler {
	d := dist()
	files := http.FileServerFS(d)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !uiBuilt() {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(notBuiltPage))
			return
		}
		p := strings.TrimPrefix(r.URL.Path, "/")
		if p == "" {
			p = "index.html"
		}
		if _, err := fs.Stat(d, p); err != nil || strings.HasPrefix(p, ".") {
			// Client-side routes fall back to the app.
			r = r.Clone(r.Context())
			r.URL.Path = "/"
		}
		if strings.HasPrefix(r.URL.Path, "/assets/") {
			// Vite names assets by content hash.
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}

// UIBuilt reports whether the web UI was built into this binary.
func UIBuilt() bool { return uiBuilt() }
