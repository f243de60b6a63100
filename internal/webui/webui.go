// Package webui serves a single-page web app built by Vite and embedded in
// the binary (the admin UI of cagent up and the control plane's UI).
package webui

import (
	"io/fs"
	"net/http"
	"strings"
)

// App is one embedded single-page app.
type App struct {
	files    fs.FS
	server   http.Handler
	notBuilt string
}

// New serves the app in files (the Vite dist directory). notBuiltPage is
// the HTML answered, with 503, when the binary was compiled without a UI
// build (only the committed placeholder is embedded).
func New(files fs.FS, notBuiltPage string) *App {
	return &App{files: files, server: http.FileServerFS(files), notBuilt: notBuiltPage}
}

// Built reports whether the UI was built into this binary.
func (a *App) Built() bool {
	_, err := fs.Stat(a.files, "index.html")
	return err == nil
}

// ServeHTTP serves the app's files. Unknown paths fall back to the app, so
// client-side routes load it; content-hashed assets are cached for good,
// everything else revalidated.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.Built() {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(a.notBuilt))
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	if p == "" {
		p = "index.html"
	}
	if _, err := fs.Stat(a.files, p); err != nil || strings.HasPrefix(p, ".") {
		r = r.Clone(r.Context())
		r.URL.Path = "/"
	}
	if strings.HasPrefix(r.URL.Path, "/assets/") {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	a.server.ServeHTTP(w, r)
}
