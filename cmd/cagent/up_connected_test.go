package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/internal/testutil"
)

// Connected mode is chosen by --control-plane or mode: connected, and a
// missing or bad setting is refused before anything is created.
func TestUpConnectedModeRefusesMissingSettings(t *testing.T) {
	testutil.RequireRoot(t) // `cagent up` checks for root first
	t.Setenv("CAGENT_TOKEN", "")
	dir := t.TempDir()
	n := 0
	write := func(body string) string {
		n++
		p := filepath.Join(dir, fmt.Sprintf("cagent-%d.yaml", n))
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"flag without token", []string{"--config", write("domains: []\n"), "--control-plane", "http://127.0.0.1:1"}, "agent token is required"},
		{"policy without token", []string{"--config", write("mode: connected\ncontrol_plane: {url: 'http://127.0.0.1:1'}\n")}, "agent token is required"},
		{"bad url", []string{"--config", write("domains: []\n"), "--control-plane", "ftp://x", "--token", "t"}, "use http(s)://host"},
		{"unreadable token file", []string{"--config", write("mode: connected\ncontrol_plane: {url: 'http://127.0.0.1:1', token_file: /nonexistent/tok}\n")}, "token_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			_, _, err := runSecretCLI(t, "", append([]string{"up", "--state-dir", state}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(state); !os.IsNotExist(err) {
				t.Errorf("state directory created before the settings were checked")
			}
		})
	}
}
