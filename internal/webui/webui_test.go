package webui

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func TestServe(t *testing.T) {
	app := New(fstest.MapFS{
		"index.html":         {Data: []byte("<html>app</html>")},
		"assets/app-1a2b.js": {Data: []byte("js")},
		".keep":              {Data: nil},
	}, "not built")
	if !app.Built() {
		t.Fatal("Built() = false with an index.html")
	}
	tests := []struct {
		path, body, cache string
	}{
		{"/", "app", "no-cache"},
		{"/logs/live", "app", "no-cache"}, // client-side route
		{"/.keep", "app", "no-cache"},     // dot files are not served
		{"/assets/app-1a2b.js", "js", "immutable"},
	}
	for _, tt := range tests {
		rec := get(t, app, tt.path)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), tt.body) {
			t.Errorf("%s: %d %q, want 200 containing %q", tt.path, rec.Code, rec.Body, tt.body)
		}
		if cc := rec.Header().Get("Cache-Control"); !strings.Contains(cc, tt.cache) {
			t.Errorf("%s: Cache-Control %q, want %q", tt.path, cc, tt.cache)
		}
	}
}

func TestNotBuilt(t *testing.T) {
	app := New(fstest.MapFS{".keep": {Data: nil}}, "<p>build the UI</p>")
	if app.Built() {
		t.Fatal("Built() = true without index.html")
	}
	rec := get(t, app, "/")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "build the UI") {
		t.Fatalf("got %d %q", rec.Code, rec.Body)
	}
}
