package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"github.com/cagent-dev/cagent/internal/testutil"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/secretstore"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// runSecretCLI runs the root command with args and stdin, returning stdout and stderr.
func runSecretCLI(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

const cliCanary = "sk-CLI-CANARY-93b1c0ffee"

func TestSecretCommands(t *testing.T) {
	state := t.TempDir()
	steps := []struct {
		stdin   string
		args    []string
		wantOut string
		wantErr string
	}{
		{cliCanary + "\n", []string{"secret", "set", "openai", "--state-dir", state}, "", ""},
		{"ghp_value", []string{"secret", "set", "github", "--state-dir", state}, "", ""},
		{"", []string{"secret", "list", "--state-dir", state}, "github\nopenai\n", ""},
		{"\n", []string{"secret", "set", "empty", "--state-dir", state}, "", "empty value"},
		{"v", []string{"secret", "set", "bad/name", "--state-dir", state}, "", "invalid secret name"},
		{"", []string{"secret", "rm", "github", "--state-dir", state}, "", ""},
		{"", []string{"secret", "rm", "github", "--state-dir", state}, "", "no such secret"},
		{"", []string{"secret", "list", "--state-dir", state}, "openai\n", ""},
		{"", []string{"secret", "set", "--state-dir", state}, "", "accepts 1 arg"},
	}
	for i, s := range steps {
		out, errOut, err := runSecretCLI(t, s.stdin, s.args...)
		if s.wantErr == "" && err != nil {
			t.Fatalf("step %d %v: %v", i, s.args, err)
		}
		if s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Fatalf("step %d %v: err = %v, want %q", i, s.args, err, s.wantErr)
		}
		if out != s.wantOut {
			t.Errorf("step %d %v: stdout %q, want %q", i, s.args, out, s.wantOut)
		}
		if strings.Contains(out+errOut, "CANARY") {
			t.Errorf("step %d printed the value", i)
		}
	}
	st, err := secretstore.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.Secret(context.Background(), "openai")
	if err != nil || v != cliCanary {
		t.Fatalf("stored value: %v (trailing newline must be trimmed)", err)
	}
	filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("CANARY")) {
				t.Errorf("%s holds the plaintext", p)
			}
		}
		return err
	})
}

func TestCAExport(t *testing.T) {
	state := t.TempDir()
	out1, _, err := runSecretCLI(t, "", "ca", "export", "--state-dir", state)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode([]byte(out1))
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("not one PEM certificate: %q", out1)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA {
		t.Fatalf("parse: %v", err)
	}
	out2, _, err := runSecretCLI(t, "", "ca", "export", "--state-dir", state)
	if err != nil || out2 != out1 {
		t.Errorf("second export differs (err %v)", err)
	}
	if strings.Contains(out1, "PRIVATE") {
		t.Error("export printed the key")
	}
}

// TestSecretNoEcho types a value into a real pseudo-terminal and checks that
// the terminal does not echo it back and that its settings are restored.
func TestSecretNoEcho(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		testutil.SkipUnlessCI(t, "no pty: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&unix.ECHO == 0 {
		t.Fatal("pty starts without echo; the test could not tell")
	}

	type result struct {
		v   string
		err error
	}
	done := make(chan result, 1)
	var prompt bytes.Buffer
	go func() {
		v, err := readSecretValue(tty, &prompt, "openai")
		done <- result{v, err}
	}()
	// Wait until echo is off before typing, as a person would after the prompt.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err == nil && cur.Lflag&unix.ECHO == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("echo never turned off")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := ptmx.Write([]byte(cliCanary + "\n")); err != nil {
		t.Fatal(err)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("readSecretValue did not return")
	}
	if res.err != nil || res.v != cliCanary {
		t.Fatalf("read %q, %v", res.v, res.err)
	}
	// Whatever the terminal sent back to the "screen" must not hold the value.
	// (Non-blocking raw reads: a pty master ignores read deadlines.)
	time.Sleep(100 * time.Millisecond)
	fd := int(ptmx.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	var echoed []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		echoed = append(echoed, buf[:n]...)
	}
	if bytes.Contains(echoed, []byte("CANARY")) {
		t.Errorf("terminal echoed the value: %q", echoed)
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != before.Lflag {
		t.Errorf("terminal flags not restored: %#x, want %#x", after.Lflag, before.Lflag)
	}
	if !strings.Contains(prompt.String(), "openai") || strings.Contains(prompt.String(), "CANARY") {
		t.Errorf("prompt %q", prompt.String())
	}
}
