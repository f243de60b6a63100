package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/sandbox/firewall/firewalltest"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"github.com/creack/pty"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.Cleanup(firewalltest.Exit)) }

func testPolicy(t *testing.T, extra string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("t.yaml", []byte("sandbox:\n  resources: {memory: 128MiB, pids: 64}\n"+extra))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	pol := testPolicy(t, "")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no policy", Config{Args: []string{"true"}}, "no policy"},
		{"no command", Config{Policy: pol}, "no command"},
		{"unknown runtime", Config{Policy: pol, Args: []string{"true"}, Runtime: "kata"}, "unknown runtime"},
		{"runc missing", Config{Policy: pol, Args: []string{"true"}, Runtime: "runc", RuncPath: "/nonexistent/runc"}, "apt-get install runc"},
		{"runsc missing", Config{Policy: pol, Args: []string{"true"}, Runtime: "gvisor", RunscPath: "/nonexistent/runsc"}, "apt-get install runsc"},
		{"workspace missing", Config{Policy: pol, Args: []string{"true"}, Runtime: "runc", RuncPath: "/bin/true", Workspace: "/nonexistent/ws"}, "workspace directory does not exist"},
		{"terminal without a tty", Config{Policy: pol, Args: []string{"true"}, Runtime: "runc", RuncPath: "/bin/true", Terminal: true, Stdin: strings.NewReader("")}, "Terminal needs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.want)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		c := Config{Policy: pol, Args: []string{"true"}, RuncPath: "/bin/true", RunscPath: "/nonexistent"}
		err := c.Validate()
		if os.Geteuid() != 0 {
			if !errors.Is(err, ErrNotRoot) {
				t.Fatalf("Validate() as non-root = %v, want ErrNotRoot", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Runtime != RuntimeRunc || c.StateDir != "/var/lib/cagent" || c.Stdout == nil || c.Logger == nil || c.Now == nil {
			t.Errorf("defaults not filled: %+v", c)
		}
	})
}

// tracker records the IDs of the sandboxes a test starts.
type tracker struct {
	mu  sync.Mutex
	ids []string
}

func (tr *tracker) services(g Gateway) (*Services, error) {
	tr.mu.Lock()
	tr.ids = append(tr.ids, g.ID)
	tr.mu.Unlock()
	return &Services{}, nil
}

// leftovers lists what the tracked sandboxes left behind on the host.
func (tr *tracker) leftovers(t *testing.T, state string) []string {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []string
	for _, id := range tr.ids {
		l := &lease{ID: id}
		if h, err := readLease(filepath.Join(RegistryDir, id+".json")); err == nil && h.PID != os.Getpid() && alive(h.PID) {
			// A live run of another process (another package's test,
			// running alongside) has claimed the ID since this test's run
			// gave it up or was killed: what the ID names is that run's.
			continue
		}
		if netsetup.Exists(l.netns()) {
			out = append(out, "netns "+l.netns())
		}
		if links, _ := netsetup.LinkNames(); contains(links, l.hostIf()) {
			out = append(out, "link "+l.hostIf())
		}
		if _, err := os.Lstat(filepath.Join(MemBundleDir, id)); err == nil {
			out = append(out, "bundle "+filepath.Join(MemBundleDir, id))
		}
	}
	for _, d := range []string{"leases", "bundles"} {
		ents, _ := os.ReadDir(filepath.Join(state, "sandbox", d))
		for _, e := range ents {
			out = append(out, d+"/"+e.Name())
		}
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func runtimesFor(t *testing.T) []string {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	testutil.RequireCommand(t, "runsc")
	return []string{RuntimeRunc, RuntimeGVisor}
}

func TestRunExitStatusAndCleanup(t *testing.T) {
	for _, rt := range runtimesFor(t) {
		t.Run(rt, func(t *testing.T) {
			state := t.TempDir()
			tr := &tracker{}
			ws := t.TempDir()
			os.Chmod(ws, 0o777)
			var out bytes.Buffer
			code, err := Run(context.Background(), Config{Policy: testPolicy(t, "  hostname: box\n"), Runtime: rt, StateDir: state, Workspace: ws, NewServices: tr.services,
				Args: []string{"/bin/sh", "-c", `echo out; echo err >&2; hostname; id -u; pwd; cat /etc/resolv.conf; ` +
					`echo hi > /workspace/f; touch /usr/x 2>/dev/null && echo ROOT-WRITABLE; ` +
					`touch /tmp/x && echo tmp-ok; echo "v6off:$(cat /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null || echo none)"; ` +
					`read line; echo "in:$line"; exit 5`},
				Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &out})
			if err != nil {
				t.Fatal(err)
			}
			if code != 5 {
				t.Errorf("exit code %d, want 5\n%s", code, out.String())
			}
			s := out.String()
			for _, want := range []string{"out\n", "err\n", "box\n", "1000\n", "/workspace\n", "nameserver 10.209.", "tmp-ok", "in:hello"} {
				if !strings.Contains(s, want) {
					t.Errorf("output lacks %q:\n%s", want, s)
				}
			}
			// gVisor has no IPv6 sysctl; runc sees the netns's own.
			if rt == RuntimeRunc && !strings.Contains(s, "v6off:1") {
				t.Errorf("IPv6 not disabled in the sandbox's namespace:\n%s", s)
			}
			if strings.Contains(s, "ROOT-WRITABLE") {
				t.Errorf("root filesystem is writable")
			}
			if b, err := os.ReadFile(filepath.Join(ws, "f")); err != nil || string(b) != "hi\n" {
				t.Errorf("workspace write: %q %v", b, err)
			}
			if l := tr.leftovers(t, state); len(l) != 0 || len(tr.ids) != 1 {
				t.Errorf("left behind: %v (ids %v)", l, tr.ids)
			}
		})
	}
}

// TestConcurrent runs sandboxes at once, two state directories sharing the
// pool: every one gets its own subnet.
func TestConcurrent(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	states := []string{t.TempDir(), t.TempDir()}
	tr := &tracker{}
	const n = 6
	var wg sync.WaitGroup
	addrs := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			code, err := Run(context.Background(), Config{Policy: testPolicy(t, ""), Runtime: RuntimeRunc, StateDir: states[i%2], NewServices: tr.services,
				Args:   []string{"/bin/sh", "-c", "cat /etc/hosts | tail -1 | cut -f1; sleep 1"},
				Stdout: &out, Stderr: &out})
			if err == nil && code != 0 {
				err = fmt.Errorf("exit %d: %s", code, out.String())
			}
			addrs[i], errs[i] = strings.TrimSpace(out.String()), err
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("sandbox %d: %v", i, errs[i])
			continue
		}
		if seen[addrs[i]] {
			t.Errorf("address %s given twice (%v)", addrs[i], addrs)
		}
		seen[addrs[i]] = true
	}
	for _, s := range states {
		if l := tr.leftovers(t, s); len(l) != 0 {
			t.Errorf("left behind: %v", l)
		}
	}
}

func TestCancelTearsDown(t *testing.T) {
	for _, rt := range runtimesFor(t) {
		t.Run(rt, func(t *testing.T) {
			state := t.TempDir()
			tr := &tracker{}
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(time.Second, cancel)
			start := time.Now()
			code, err := Run(ctx, Config{Policy: testPolicy(t, ""), Runtime: rt, StateDir: state, NewServices: tr.services,
				Args: []string{"/bin/sleep", "60"}, KillGrace: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if code == 0 || time.Since(start) > 15*time.Second {
				t.Errorf("code %d after %v", code, time.Since(start))
			}
			if l := tr.leftovers(t, state); len(l) != 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
}

func TestSignalForwarded(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	sigs := make(chan os.Signal, 1)
	var out bytes.Buffer
	time.AfterFunc(700*time.Millisecond, func() { sigs <- syscall.SIGUSR1 })
	code, err := Run(context.Background(), Config{Policy: testPolicy(t, ""), Runtime: RuntimeRunc, StateDir: t.TempDir(),
		Args:    []string{"/bin/sh", "-c", `trap "echo got-usr1; exit 42" USR1; i=0; while [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done`},
		Signals: sigs, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	if code != 42 || !strings.Contains(out.String(), "got-usr1") {
		t.Errorf("code %d, output %q", code, out.String())
	}
}

// TestTerminal runs an interactive-style command on a pseudo-terminal.
func TestTerminal(t *testing.T) {
	for _, rt := range runtimesFor(t) {
		t.Run(rt, func(t *testing.T) {
			ptmx, tty, err := pty.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer ptmx.Close()
			defer tty.Close()
			if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 111}); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := ptmx.Read(buf)
					out.Write(buf[:n])
					if err != nil {
						return
					}
				}
			}()
			code, err := Run(context.Background(), Config{Policy: testPolicy(t, ""), Runtime: rt, StateDir: t.TempDir(),
				Args:     []string{"/bin/sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty; stty size"},
				Terminal: true, Rows: 33, Cols: 111, Stdin: tty, Stdout: tty, Stderr: tty})
			tty.Close()
			time.Sleep(200 * time.Millisecond)
			ptmx.Close()
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			s := out.String()
			if code != 0 || !strings.Contains(s, "is-a-tty") || !strings.Contains(s, "33 111") {
				t.Errorf("code %d, output %q", code, s)
			}
		})
	}
}

// TestGC: a run killed with SIGKILL leaves its sandbox; gc removes it and
// leaves live runs alone.
func TestGC(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	state := t.TempDir()
	// A helper process runs the sandbox, then is killed.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRun$")
	cmd.Env = append(os.Environ(), "CAGENT_HELPER_STATE="+state)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tr := &tracker{}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ls, _ := readLeases(filepath.Join(state, "sandbox"))
		if len(ls) == 1 {
			if _, err := os.Stat(filepath.Join(bundlePath(filepath.Join(state, "sandbox"), ls[0].ID), "config.json")); err == nil {
				tr.ids = []string{ls[0].ID}
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	// While it runs, gc must leave it alone.
	if ids, err := GC(context.Background(), GCConfig{StateDir: state}); err != nil || len(ids) != 0 {
		t.Fatalf("GC of a live run removed %v (%v)", ids, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if l := tr.leftovers(t, state); len(l) < 4 {
		t.Fatalf("nothing left after SIGKILL; the test is vacuous\n%s", out.String())
	}
	ids, err := GC(context.Background(), GCConfig{StateDir: state})
	if err != nil || len(ids) != 1 {
		t.Fatalf("GC = %v, %v", ids, err)
	}
	if l := tr.leftovers(t, state); len(l) != 0 {
		t.Errorf("left behind after gc: %v", l)
	}
}

// TestGCAll: a crashed run whose state directory is gone too is found
// through the host-wide registry, and its command is killed.
func TestGCAll(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "runc")
	testutil.LockCrashGC(t)
	state, err := os.MkdirTemp("", "cagent-gcall-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRun$")
	cmd.Env = append(os.Environ(), "CAGENT_HELPER_STATE="+state)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tr := &tracker{}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && len(tr.ids) == 0 {
		ls, _ := readLeases(filepath.Join(state, "sandbox"))
		if len(ls) == 1 {
			if cgroupProcs(ls[0].ID) != "" {
				tr.ids = []string{ls[0].ID}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(tr.ids) == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the helper's sandbox never showed up in a cgroup")
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	os.RemoveAll(state) // the state directory is gone with the crash
	ids, err := GC(context.Background(), GCConfig{StateDir: t.TempDir(), All: true})
	if err != nil || !contains(ids, tr.ids[0]) {
		t.Fatalf("GC(All) = %v, %v; want %s", ids, err, tr.ids[0])
	}
	if l := tr.leftovers(t, state); len(l) != 0 {
		t.Errorf("left behind after gc --all: %v", l)
	}
	if procs := cgroupProcs(tr.ids[0]); strings.TrimSpace(procs) != "" {
		t.Errorf("processes still in the sandbox's cgroup: %s", procs)
	}
	if _, err := os.Stat(filepath.Join(RegistryDir, tr.ids[0]+".json")); err == nil {
		t.Errorf("registry entry left")
	}
}

func TestHelperRun(t *testing.T) {
	state := os.Getenv("CAGENT_HELPER_STATE")
	if state == "" {
		t.Skip("helper for TestGC")
	}
	Run(context.Background(), Config{Policy: testPolicy(t, ""), Runtime: RuntimeRunc, StateDir: state, Args: []string{"/bin/sleep", "60"}})
}

// TestWindowSizeFollows runs a sandbox on a real controlling terminal (a
// helper process started on a pty) and resizes the terminal while the
// command runs: the command sees the new size.
func TestWindowSizeFollows(t *testing.T) {
	for _, rt := range runtimesFor(t) {
		t.Run(rt, func(t *testing.T) { windowSizeFollows(t, rt) })
	}
}

func windowSizeFollows(t *testing.T, runtime string) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperTTY$")
	cmd.Env = append(os.Environ(), "CAGENT_HELPER_TTY_STATE="+t.TempDir(), "CAGENT_HELPER_TTY_RUNTIME="+runtime)
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 20, Cols: 70})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var mu sync.Mutex
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	seen := func(s string) bool { mu.Lock(); defer mu.Unlock(); return strings.Contains(out.String(), s) }
	deadline := time.Now().Add(20 * time.Second)
	for !seen("size1=20 70") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 41, Cols: 123}); err != nil {
		t.Fatal(err)
	}
	for !seen("size2=") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Wait()
	ptmx.Close()
	<-done
	if !seen("size1=20 70") || !seen("size2=41 123") {
		mu.Lock()
		t.Errorf("window size did not follow:\n%q", out.String())
		mu.Unlock()
	}
}

func TestHelperTTY(t *testing.T) {
	state := os.Getenv("CAGENT_HELPER_TTY_STATE")
	if state == "" {
		t.Skip("helper for TestWindowSizeFollows")
	}
	rows, cols, _ := pty.Getsize(os.Stdin)
	Run(context.Background(), Config{Policy: testPolicy(t, ""), Runtime: os.Getenv("CAGENT_HELPER_TTY_RUNTIME"), StateDir: state,
		Terminal: true, Rows: uint(rows), Cols: uint(cols), Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Args: []string{"/bin/sh", "-c", `s=$(stty size); echo "size1=$s"; i=0; while [ "$(stty size)" = "$s" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; echo "size2=$(stty size)"`}})
}

// TestNoHostTerminalWithoutTTY: when stdout is the user's terminal but
// stdin is not (so no TTY mode), the sandbox gets a pipe, not the terminal:
// TIOCSTI cannot push keystrokes into the user's shell. (runc and runsc
// also pipe stdio in the foreground; this guards the property, whichever
// layer provides it.)
func TestNoHostTerminalWithoutTTY(t *testing.T) {
	for _, rt := range runtimesFor(t) {
		t.Run(rt, func(t *testing.T) { noHostTerminal(t, rt) })
	}
}

func noHostTerminal(t *testing.T, runtime string) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	code, err := Run(context.Background(), Config{Policy: testPolicy(t, ""), Runtime: runtime, StateDir: t.TempDir(),
		Args:  []string{"/usr/bin/perl", "-e", `print((-t STDOUT) ? "stdout-is-tty\n" : "stdout-not-tty\n"); my $c = "Z"; ioctl(STDOUT, 0x5412, $c) or print "tiocsti-failed\n";`},
		Stdin: strings.NewReader(""), Stdout: tty, Stderr: tty})
	tty.Close()
	time.Sleep(100 * time.Millisecond)
	ptmx.Close()
	<-done
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v: %q", code, err, out.String())
	}
	if s := out.String(); !strings.Contains(s, "stdout-not-tty") || !strings.Contains(s, "tiocsti-failed") {
		t.Errorf("the sandbox got the terminal: %q", s)
	}
}

// cgroupProcs returns the cgroup.procs of a sandbox's cgroup (v1 pids
// hierarchy or v2), "" when there is none.
func cgroupProcs(id string) string {
	for _, d := range []string{"/sys/fs/cgroup/pids/cagent", "/sys/fs/cgroup/cagent"} {
		if b, err := os.ReadFile(filepath.Join(d, id, "cgroup.procs")); err == nil {
			if len(b) == 0 {
				return " " // exists, empty
			}
			return string(b)
		}
	}
	return ""
}
