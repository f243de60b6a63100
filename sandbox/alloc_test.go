package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"golang.org/x/sys/unix"
)

// TestAllocateExhaustion: a /29 pool holds two /30 sandboxes; the third is
// refused with a message that says what to do.
func TestAllocateExhaustion(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "sandbox")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A /29 of 10.209.253.0/24 picked by pid, so that concurrent test
	// processes (other checkouts) rarely share one.
	pool := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 209, 253, byte(8 * (os.Getpid() % 32))}), 29)
	var got []*lease
	t.Cleanup(func() {
		for _, l := range got {
			netsetup.Delete(l.netns())
			removeLease(dir, l)
		}
	})
	for range 2 {
		l := &lease{PID: os.Getpid(), StateDir: dir}
		if err := allocate(dir, pool, l); err != nil {
			t.Fatal(err)
		}
		got = append(got, l)
		if !pool.Contains(l.Gateway) || !pool.Contains(l.Addr) || l.Addr != l.Gateway.Next() {
			t.Errorf("lease %+v outside %s", l, pool)
		}
		if _, err := os.Stat(filepath.Join(RegistryDir, l.ID+".json")); err != nil {
			t.Errorf("no registry entry: %v", err)
		}
	}
	if got[0].ID == got[1].ID {
		t.Fatalf("same subnet twice: %s", got[0].ID)
	}
	err := allocate(dir, pool, &lease{PID: os.Getpid()})
	if err == nil || !strings.Contains(err.Error(), "exhausted") || !strings.Contains(err.Error(), "cagent gc") {
		t.Fatalf("third allocate = %v, want the exhaustion error", err)
	}
	// Freeing one makes it available again.
	netsetup.Delete(got[1].netns())
	removeLease(dir, got[1])
	l := &lease{PID: os.Getpid()}
	if err := allocate(dir, pool, l); err != nil || l.ID != got[1].ID {
		t.Fatalf("re-allocate = %v, %s; want %s", err, l.ID, got[1].ID)
	}
	got[1] = l
}

// claimForTest allocates, for a live run of this test process, a /30 of
// 10.209.252.0/24 picked by pid (so that concurrent test processes rarely
// share one), and gives it up when the test ends.
func claimForTest(t *testing.T) (dir string, l *lease) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "sandbox")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pool := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 209, 252, byte(4 * (os.Getpid() % 64))}), 30)
	l = &lease{PID: os.Getpid(), Created: time.Now().UTC().Format(time.RFC3339Nano), StateDir: dir}
	if err := allocate(dir, pool, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := errors.Join(releaseID(l), removeStateLease(dir, l)); err != nil {
			t.Error(err)
		}
	})
	return dir, l
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// holds reports whether l still holds its ID: its namespace exists and the
// registry entry of the ID is l's.
func holds(t *testing.T, l *lease) {
	t.Helper()
	if !netsetup.Exists(l.netns()) {
		t.Errorf("the live run's namespace %s is gone", l.netns())
	}
	if cur, err := readLease(filepath.Join(RegistryDir, l.ID+".json")); err != nil || !cur.same(l) {
		t.Errorf("the live run's registry entry is %+v, %v; want %+v", cur, err, l)
	}
}

// TestOldRunSparesTheNewOwnersEntry: a run that gave its ID up must not,
// removing its lease late, remove the registry entry of the run that has
// claimed the ID since; that entry is how `cagent gc --all` finds the new
// run's leftovers if it crashes.
func TestOldRunSparesTheNewOwnersEntry(t *testing.T) {
	testutil.RequireRoot(t)
	_, live := claimForTest(t)
	oldDir := filepath.Join(t.TempDir(), "sandbox")
	old := &lease{ID: live.ID, PID: deadPID(t), Created: "2026-01-01T00:00:00Z", StateDir: oldDir}
	if err := removeLease(oldDir, old); err != nil {
		t.Fatal(err)
	}
	holds(t, live)
}

// TestGCSparesAnIDClaimedAgain: a lease left behind without its namespace
// (the run died while giving it up, or the host rebooted) whose ID a live
// run of another state directory has claimed since. gc of the old lease's
// state directory, with and without --all, removes that lease and its own
// files, and nothing of the live run's: before, it deleted the live run's
// namespace and killed the processes in its cgroup, both named by the ID.
func TestGCSparesAnIDClaimedAgain(t *testing.T) {
	testutil.RequireRoot(t)
	_, live := claimForTest(t)
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("all=%v", all), func(t *testing.T) {
			state := t.TempDir()
			dir := filepath.Join(state, "sandbox")
			stale := &lease{ID: live.ID, Gateway: live.Gateway, Addr: live.Addr, PID: deadPID(t), Created: "2026-01-01T00:00:00Z", StateDir: dir}
			b, err := json.Marshal(stale)
			if err != nil {
				t.Fatal(err)
			}
			bundle := filepath.Join(dir, "bundles", stale.ID)
			for _, d := range []string{filepath.Join(dir, "leases"), bundle} {
				if err := os.MkdirAll(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "leases", stale.ID+".json"), b, 0o600); err != nil {
				t.Fatal(err)
			}
			ids, err := GC(context.Background(), GCConfig{StateDir: state, All: all, Shm: t.TempDir()})
			if err != nil || !slices.Contains(ids, stale.ID) {
				t.Errorf("GC = %v, %v; want the stale lease %s removed", ids, err, stale.ID)
			}
			for _, p := range []string{filepath.Join(dir, "leases", stale.ID+".json"), bundle} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s is still there", p)
				}
			}
			holds(t, live)
		})
	}
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{{"0ad10000", true}, {"0AD1FFFF", true}, {"", false}, {"0ad1000", false}, {"../../x", false}, {"0ad1000g", false}, {"0ad100000", false}} {
		if validID(tc.id) != tc.ok {
			t.Errorf("validID(%q) = %v", tc.id, !tc.ok)
		}
	}
}

func TestIsInitOf(t *testing.T) {
	status := func(ppid, nspid string) []byte {
		return []byte("Name:\ttrue\nState:\tZ (zombie)\nTgid:\t4242\nPid:\t4242\nPPid:\t" + ppid + "\nNSpid:\t" + nspid + "\n")
	}
	for _, tc := range []struct {
		name   string
		status []byte
		ppid   int
		want   bool
	}{
		{"container init", status("100", "4242\t1"), 100, true},
		{"nested namespaces", status("100", "4242\t77\t1"), 100, true},
		{"other parent", status("101", "4242\t1"), 100, false},
		{"not a namespace init", status("100", "4242\t2"), 100, false},
		{"host process", status("100", "4242"), 100, false},
		{"no NSpid line", []byte("PPid:\t100\n"), 100, false},
		{"empty", nil, 100, false},
		{"parent prefix only", status("1000", "4242\t1"), 100, false},
	} {
		if got := isInitOf(tc.status, tc.ppid); got != tc.want {
			t.Errorf("%s: isInitOf = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestWaitPidFile: runc writes its pid file to a temporary name and
// renames it; the wait sees the rename, a file already there, and gives
// up when the runtime is done.
func TestWaitPidFile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		early bool // the file exists before the wait starts
		never bool // nothing is written; done closes
	}{{name: "renamed later"}, {name: "already there", early: true}, {name: "never written", never: true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "init.pid")
			write := func() {
				tmp := filepath.Join(dir, ".init.pid")
				if err := os.WriteFile(tmp, []byte("4242"), 0o644); err != nil {
					t.Error(err)
				}
				if err := os.Rename(tmp, path); err != nil {
					t.Error(err)
				}
			}
			done := make(chan struct{})
			switch {
			case tc.early:
				write()
			case tc.never:
				time.AfterFunc(50*time.Millisecond, func() { close(done) })
			default:
				time.AfterFunc(50*time.Millisecond, write)
			}
			t0 := time.Now()
			pid, ok := waitPidFile(path, done)
			if tc.never {
				if ok || time.Since(t0) > 5*time.Second {
					t.Errorf("waitPidFile = %d, %v after %v; want false soon after done", pid, ok, time.Since(t0))
				}
				return
			}
			if !ok || pid != 4242 {
				t.Errorf("waitPidFile = %d, %v; want 4242, true", pid, ok)
			}
		})
	}
}

// TestWaitExit: a pidfd wait returns when the process exits (also as an
// unreaped zombie), and gives up when done closes first.
func TestWaitExit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sleep string
		done  bool // close done before the process exits
		want  bool
	}{{"exits", "0.05", false, true}, {"done first", "30", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sleep", tc.sleep)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			fd, err := unix.PidfdOpen(cmd.Process.Pid, unix.PIDFD_NONBLOCK)
			if err != nil {
				t.Skipf("pidfd: %v", err)
			}
			f := os.NewFile(uintptr(fd), "pidfd")
			defer f.Close()
			done := make(chan struct{})
			if tc.done {
				time.AfterFunc(50*time.Millisecond, func() { close(done) })
			}
			t0 := time.Now()
			if got := waitExit(f, done); got != tc.want || time.Since(t0) > 10*time.Second {
				t.Errorf("waitExit = %v after %v, want %v", got, time.Since(t0), tc.want)
			}
		})
	}
}
