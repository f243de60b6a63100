package webui

import (
	"net/http/httptest"
	"testing"
)

func TestSameOriginWebSocket(t *testing.T) {
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"http://ui.example:8081", true},
		{"https://UI.example:8081", true},
		{"", false}, // browsers always send one on a WebSocket handshake
		{"null", false},
		{"http://evil.example", false},
		{"http://ui.example:9999", false},
		{"file://ui.example:8081", false},
		{"http://ui.example:8081.evil.example", false},
	} {
		r := httptest.NewRequest("GET", "http://ui.example:8081/api/terminal", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := SameOriginWebSocket(r); got != tc.ok {
			t.Errorf("Origin %q: %v, want %v", tc.origin, got, tc.ok)
		}
	}
}

func TestTerminalSize(t *testing.T) {
	for v, want := range map[string]uint16{"": 80, "x": 80, "0": 80, "-3": 80, "1": 1, "132": 132, "1000": 1000, "1001": 80, "99999999999": 80} {
		if got := TerminalSize(v, 80); got != want {
			t.Errorf("TerminalSize(%q) = %d, want %d", v, got, want)
		}
	}
}
