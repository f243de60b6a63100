package sandbox

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
)

func longPolicy(t *testing.T, runtime, ws string) *policy.Policy {
	t.Helper()
	y := "sandbox:\n  runtime: " + runtime + "\n  workspace: " + ws + "\n  subnet_pool: 10.209.128.0/20\n"
	p, err := policy.Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLongExecAndClose(t *testing.T) {
	for _, rt := range []struct{ name, bin string }{{RuntimeRunc, "runc"}, {RuntimeGVisor, "runsc"}} {
		t.Run(rt.name, func(t *testing.T) {
			testutil.RequireRoot(t)
			testutil.RequireCommand(t, rt.bin)
			testLong(t, rt.name)
		})
	}
}

func testLong(t *testing.T, runtime string) {
	ws := t.TempDir()
	if err := os.Chmod(ws, 0o777); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := CreateLong(ctx, LongConfig{Config: Config{Policy: longPolicy(t, runtime, ws), StateDir: t.TempDir(), Agent: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ns := "cagent-" + l.ID()
	if !netsetup.Exists(ns) {
		t.Fatalf("netns %s missing", ns)
	}

	// Plain exec: output, exit status, workspace is the cwd and writable.
	p, err := l.Exec(ctx, ExecSpec{Args: []string{"/bin/sh", "-c", "pwd; id -u; echo data > f.txt; exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(p)
	code, err := p.Wait()
	p.Close()
	if err != nil || code != 3 {
		t.Fatalf("exit %d, %v", code, err)
	}
	if got := string(out); !strings.Contains(got, "/workspace") || !strings.Contains(got, "1000") {
		t.Fatalf("output %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "f.txt")); string(b) != "data\n" {
		t.Fatalf("workspace file %q", b)
	}

	// TTY exec: a shell answers, and a resize reaches the terminal.
	tp, err := l.Exec(ctx, ExecSpec{Args: []string{"/bin/sh"}, TTY: true, Cols: 100, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Resize(123, 45); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := tp.Write([]byte("echo A$((6*7))B; stty size; exit\n")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&buf, tp); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		tp.Close()
		<-done
	}
	tp.Close()
	if !strings.Contains(buf.String(), "A42B") {
		t.Fatalf("tty output %q", buf.String())
	}
	if !strings.Contains(buf.String(), "45 123") {
		t.Errorf("resize not seen: %q", buf.String())
	}
	if err := l.Healthy(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if netsetup.Exists(ns) {
		t.Fatalf("netns %s left behind", ns)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("init still running after Close")
	}
}
