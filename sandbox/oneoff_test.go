package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// shmBase is a fresh directory on /dev/shm (a tmpfs), or "" without one.
func shmBase(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/dev/shm", "cagent-test-")
	if err != nil {
		return ""
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

// TestOneOffHelper is the "cagent run" that gets SIGKILLed in
// TestGCOneOffDirOfKilledRun: it makes and locks a one-off directory,
// prints it and waits to be killed.
func TestOneOffHelper(t *testing.T) {
	args := os.Getenv("CAGENT_ONEOFF_HELPER")
	if args == "" {
		t.Skip("helper process only")
	}
	a := strings.Split(args, ",")
	dir, _, err := OneOffDir(a[0], a[1], a[2])
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString(dir + "\n")
	select {}
}

func TestGCOneOffDirOfKilledRun(t *testing.T) {
	shm, state := shmBase(t), t.TempDir()
	if shm == "" {
		shm = "/nonexistent" // the fallback under <state>/agents
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOneOffHelper$")
	cmd.Env = append(os.Environ(), "CAGENT_ONEOFF_HELPER="+shm+","+state+",0ad10020")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	dir, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	dir = strings.TrimSpace(dir)
	noLease := func(string) bool { return false }
	// The run is alive: even with no lease for its ID, its lock keeps it.
	if got, err := gcOneOffDirs(shm, state, false, noLease); err != nil || len(got) != 0 || !exists(dir) {
		t.Fatalf("gc of a live run removed %v (err %v)", got, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed = true
	if got, err := gcOneOffDirs(shm, state, false, noLease); err != nil || !slices.Equal(got, []string{dir}) || exists(dir) {
		t.Fatalf("gc after SIGKILL removed %v (err %v), want %s", got, err, dir)
	}
}

func TestGCOneOffDirs(t *testing.T) {
	shm, state := shmBase(t), t.TempDir()
	if shm == "" {
		t.Skip("no tmpfs at /dev/shm")
	}
	// A live run (lock held), a crashed one, and a crashed one whose ID a
	// live lease uses again.
	liveDir, release, err := OneOffDir(shm, state, "0ad10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	crashed, rel2, err := OneOffDir(shm, state, "0ad10004")
	if err != nil {
		t.Fatal(err)
	}
	rel2() // the lock a SIGKILL releases; the directory stays
	reused, rel3, err := OneOffDir(shm, state, "0ad10008")
	if err != nil {
		t.Fatal(err)
	}
	rel3()
	// The fallback without a tmpfs: a crashed one-off directory, and a
	// persistent agent that merely has a one-off-like name.
	fallback, rel4, err := OneOffDir("/nonexistent", state, "0ad1000c")
	if err != nil {
		t.Fatal(err)
	}
	rel4()
	if fallback != filepath.Join(state, "agents", "sandbox-0ad1000c") {
		t.Fatalf("fallback dir %s", fallback)
	}
	named := filepath.Join(state, "agents", "sandbox-0ad10010")
	os.MkdirAll(named, 0o700)
	// Not ours to touch: a symlink with a one-off name, other names.
	target := t.TempDir()
	os.WriteFile(filepath.Join(target, "keep"), nil, 0o600)
	link := filepath.Join(shm, "cagent-sandbox-0ad10014-x")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	other := []string{filepath.Join(shm, "cagent-sandbox-nothex-x"), filepath.Join(shm, "cagent-bundles"), filepath.Join(state, "agents", "alice")}
	for _, d := range other {
		os.MkdirAll(d, 0o700)
	}

	// Another state directory's crashed run, and one from before the
	// marker: only gc --all removes them.
	foreign, rel5, err := OneOffDir(shm, t.TempDir(), "0ad10018")
	if err != nil {
		t.Fatal(err)
	}
	rel5()
	unmarked := filepath.Join(shm, "cagent-sandbox-0ad1001c-old")
	os.Mkdir(unmarked, 0o700)

	live := func(id string) bool { return id == "0ad10008" }
	got, err := gcOneOffDirs(shm, state, false, live)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []string{crashed, fallback}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("removed %v, want %v", got, want)
	}
	for _, d := range append([]string{liveDir, reused, named, link, filepath.Join(target, "keep")}, other...) {
		if !exists(d) {
			t.Errorf("%s was removed", d)
		}
	}
	for _, d := range want {
		if exists(d) {
			t.Errorf("%s is still there", d)
		}
	}
	if !exists(foreign) || !exists(unmarked) {
		t.Fatal("gc without --all removed another state directory's run")
	}
	got, err = gcOneOffDirs(shm, state, true, live)
	slices.Sort(got)
	if want := []string{foreign, unmarked}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("gc --all removed %v (err %v), want %v", got, err, want)
	}
	// The live run's directory is usable and its lock still held.
	f, locked, err := lockDir(liveDir, false)
	if f != nil {
		f.Close()
	}
	if err != nil || locked {
		t.Fatalf("lock of the live run's directory: locked %v, err %v", locked, err)
	}
}

func TestLiveLease(t *testing.T) {
	state := t.TempDir()
	leases := filepath.Join(state, "sandbox", "leases")
	os.MkdirAll(leases, 0o700)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip(err)
	}
	for _, tc := range []struct {
		name, file string
		want       bool
	}{
		{"no lease", "", false},
		{"live process", fmt.Sprintf(`{"id":"0ad1fff0","pid":%d}`, os.Getpid()), true},
		{"dead process", fmt.Sprintf(`{"id":"0ad1fff0","pid":%d}`, dead.Process.Pid), false},
		{"unreadable lease", "{", true},
	} {
		os.Remove(filepath.Join(leases, "0ad1fff0.json"))
		if tc.file != "" {
			os.WriteFile(filepath.Join(leases, "0ad1fff0.json"), []byte(tc.file), 0o600)
		}
		if got := liveLease(state, "0ad1fff0"); got != tc.want {
			t.Errorf("%s: liveLease = %v, want %v", tc.name, got, tc.want)
		}
	}
}
