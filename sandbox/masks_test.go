package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Secrets of the data plane that lie where the sandbox can look (a key file
// left world-readable in /etc, a key file and the state directory inside
// the project that is the workspace) are hidden from the agent, and stay
// intact on the host.
func TestSecretsMasked(t *testing.T) {
	for _, rt := range runtimesFor(t) {
		t.Run(rt, func(t *testing.T) {
			b := make([]byte, 6)
			rand.Read(b)
			tag := hex.EncodeToString(b)
			etcKey := "/etc/cagent-masktest-" + tag
			if err := os.WriteFile(etcKey, []byte("ETC-SECRET-"+tag+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(etcKey) })
			ws := t.TempDir()
			os.Chmod(ws, 0o777)
			wsKey := filepath.Join(ws, "api.key")
			os.WriteFile(wsKey, []byte("WS-SECRET-"+tag+"\n"), 0o644)
			state := filepath.Join(ws, ".cagent")
			os.MkdirAll(state, 0o755)
			os.WriteFile(filepath.Join(state, "ca.key"), []byte("STATE-SECRET-"+tag+"\n"), 0o644)
			// A symlink in the workspace to the /etc key: the target is masked.
			os.Symlink(etcKey, filepath.Join(ws, "link.key"))

			pol := testPolicy(t, "control_plane: {url: 'http://127.0.0.1:1', token_file: "+etcKey+"}\n"+
				"domains:\n  - domain: api.example.com\n    credential: {header: X-Key, file: "+wsKey+"}\n")
			var out bytes.Buffer
			tr := &tracker{}
			code, err := Run(context.Background(), Config{Policy: pol, Runtime: rt, StateDir: state, Workspace: ws, NewServices: tr.services,
				Args: []string{"/bin/sh", "-c", `cat ` + etcKey + ` /workspace/api.key /workspace/link.key /workspace/.cagent/ca.key 2>&1; ` +
					`echo "state:$(ls -A /workspace/.cagent | wc -l)"; echo hi > /workspace/ok; cat /workspace/ok`},
				Stdout: &out, Stderr: &out})
			if err != nil {
				t.Fatal(err)
			}
			s := out.String()
			if code != 0 || !strings.Contains(s, "state:0") || !strings.Contains(s, "hi\n") {
				t.Errorf("exit %d, output:\n%s", code, s)
			}
			if strings.Contains(s, "SECRET-"+tag) {
				t.Errorf("a secret is visible in the sandbox:\n%s", s)
			}
			for _, f := range []string{etcKey, wsKey, filepath.Join(state, "ca.key")} {
				if b, err := os.ReadFile(f); err != nil || !strings.Contains(string(b), "SECRET-"+tag) {
					t.Errorf("%s changed on the host: %q %v", f, b, err)
				}
			}
		})
	}
}
