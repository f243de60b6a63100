package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
)

// TestCagentHelper runs the cagent command line given in CAGENT_HELPER_ARGS
// in this process, for tests that must kill a cagent process.
func TestCagentHelper(t *testing.T) {
	args := os.Getenv("CAGENT_HELPER_ARGS")
	if args == "" {
		t.Skip("helper process only")
	}
	out, err := execCagent(t, strings.Split(args, "\x1f")...)
	t.Fatalf("cagent returned: %v\n%s", err, out)
}

// TestGCRemovesOneOffDirOfKilledRun: a `cagent run` killed with SIGKILL
// cannot remove its one-off agent directory on /dev/shm; `cagent gc` does,
// and leaves a live run's directory alone.
func TestGCRemovesOneOffDirOfKilledRun(t *testing.T) {
	dir, pol := runcPolicy(t)
	testutil.LockCrashGC(t)
	state := filepath.Join(dir, "state")
	args := []string{"run", "--config", pol, "--state-dir", state, "--runtime", "runc", "--", "/bin/sleep", "60"}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCagentHelper$")
	cmd.Env = append(os.Environ(), "CAGENT_HELPER_ARGS="+strings.Join(args, "\x1f"))
	logf, err := os.Create(filepath.Join(dir, "cagent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	output := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		execCagent(t, "gc", "--state-dir", state) // whatever the test left
	})

	// The run's one-off directory: on /dev/shm, marked with our state dir.
	var oneOff string
	for deadline := time.Now().Add(20 * time.Second); oneOff == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no one-off directory appeared; cagent output:\n%s", output())
		}
		select {
		case <-exited:
			t.Fatalf("cagent run exited early:\n%s", output())
		default:
		}
		dirs, _ := filepath.Glob("/dev/shm/cagent-sandbox-*")
		dirs2, _ := filepath.Glob(filepath.Join(state, "agents", "sandbox-*"))
		for _, d := range append(dirs, dirs2...) {
			if b, err := os.ReadFile(filepath.Join(d, ".cagent-one-off")); err == nil && string(b) == state {
				oneOff = d
			}
		}
	}
	// Live: gc leaves it (and the run) alone.
	if got, err := execCagent(t, "gc", "--state-dir", state); err != nil || got != "" {
		t.Fatalf("gc during a live run: %q %v", got, err)
	}
	if _, err := os.Stat(oneOff); err != nil {
		t.Fatalf("gc removed a live run's directory: %v", err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	if _, err := os.Stat(oneOff); err != nil {
		t.Fatalf("the killed run removed its directory after all (%v): nothing to test", err)
	}
	got, err := execCagent(t, "gc", "--state-dir", state)
	if err != nil || !strings.Contains(got, "removed sandbox") || !strings.Contains(got, "removed directory "+oneOff) {
		t.Fatalf("gc after SIGKILL: %q %v", got, err)
	}
	if _, err := os.Stat(oneOff); err == nil {
		t.Fatalf("%s is still there", oneOff)
	}
}
