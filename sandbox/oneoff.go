package sandbox

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// A run without --agent is its own agent: its proxy keeps a CA and byte
// budget in a one-off directory, removed when the run ends. A run killed
// with SIGKILL cannot remove it, so the run holds a flock on the directory
// for as long as it may use it, and GC removes only directories whose lock
// is free and whose sandbox ID has no live lease.

// oneOffPrefix names one-off directories: <base>/cagent-sandbox-<id>-<random>
// on /dev/shm, or <state-dir>/agents/sandbox-<id> without a tmpfs.
const oneOffPrefix = "cagent-sandbox-"

// oneOffMarker is created in every one-off directory and holds the run's
// absolute state directory. GC removes a directory under <state-dir>/agents
// only if it has one (`--agent sandbox-0ad10004` names a persistent agent
// directory that looks the same), and one on /dev/shm only if it names
// GC's state directory, unless GC runs with All.
const oneOffMarker = ".cagent-one-off"

// OneOffDir makes and locks the one-off agent directory of sandbox id: a
// fresh 0700 directory on shm (a tmpfs: nothing in it must outlive the run,
// and fsyncs there cost nothing) when shm is one, else
// <stateDir>/agents/sandbox-<id>. shm "" means /dev/shm. release unlocks it;
// call it after removing the directory.
func OneOffDir(shm, stateDir, id string) (dir string, release func(), err error) {
	if shm == "" {
		shm = "/dev/shm"
	}
	var st unix.Statfs_t
	if err := unix.Statfs(shm, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		// MkdirTemp: mode 0700, a fresh unguessable name.
		if d, err := os.MkdirTemp(shm, oneOffPrefix+id+"-"); err == nil {
			dir = d
		}
	}
	if dir == "" {
		dir = filepath.Join(stateDir, "agents", "sandbox-"+id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", nil, err
		}
	}
	// Between MkdirTemp and the lock, the sandbox's live lease keeps GC
	// off. Wait for the lock: GC holds it only while it checks the lease.
	f, _, err := lockDir(dir, true)
	if err != nil {
		return "", nil, err
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		f.Close()
		return "", nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, oneOffMarker), []byte(abs), 0o600); err != nil {
		f.Close()
		return "", nil, err
	}
	return dir, func() { f.Close() }, nil
}

// lockDir opens dir (not following a symlink) and takes an exclusive flock
// on it; without wait, it reports locked false instead of waiting.
func lockDir(dir string, wait bool) (f *os.File, locked bool, err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f = os.NewFile(uintptr(fd), dir)
	how := unix.LOCK_EX | unix.LOCK_NB
	if wait {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(fd, how); err != nil {
		if !wait && errors.Is(err, unix.EWOULDBLOCK) {
			return f, false, nil
		}
		f.Close()
		return nil, false, &os.PathError{Op: "flock", Path: dir, Err: err}
	}
	return f, true, nil
}

// oneOffID returns the sandbox ID of a one-off directory's name.
func oneOffID(name string, shm bool) (string, bool) {
	if shm {
		rest, ok := strings.CutPrefix(name, oneOffPrefix)
		if !ok {
			return "", false
		}
		id, _, ok := strings.Cut(rest, "-")
		return id, ok && validID(id)
	}
	id, ok := strings.CutPrefix(name, "sandbox-")
	return id, ok && validID(id)
}

// gcOneOffDirs removes the one-off directories in shm and
// <stateDir>/agents that belong to no live run: unlocked, owned by us, of
// this state directory (on shm, any with all; see oneOffMarker), and
// of a sandbox ID for which live reports no live lease (live must read the
// leases afresh). It returns the directories removed.
func gcOneOffDirs(shm, stateDir string, all bool, live func(id string) bool) ([]string, error) {
	absState, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, base := range []struct {
		dir string
		shm bool
	}{{shm, true}, {filepath.Join(stateDir, "agents"), false}} {
		ents, err := os.ReadDir(base.dir)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		for _, e := range ents {
			id, ok := oneOffID(e.Name(), base.shm)
			if !ok || !e.IsDir() { // IsDir: a symlink is not followed
				continue
			}
			dir := filepath.Join(base.dir, e.Name())
			f, locked, err := lockDir(dir, false)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			// live is asked only now, holding the lock: a run takes its lease
			// before it makes the directory, so a directory not yet locked
			// by its run already has a live lease.
			var st unix.Stat_t
			owner, marked := readMarker(f)
			ours := marked && (!base.shm || owner == absState) || base.shm && all
			if locked && ours && unix.Fstat(int(f.Fd()), &st) == nil && int(st.Uid) == os.Geteuid() && !live(id) {
				// Still holding the lock: a run cannot take this directory
				// meanwhile (runs make fresh ones, or lock before use).
				if err := os.RemoveAll(dir); err != nil {
					errs = append(errs, err)
				} else {
					removed = append(removed, dir)
				}
			}
			f.Close()
		}
	}
	return removed, errors.Join(errs...)
}

// readMarker reads the one-off marker in the directory open as dir.
func readMarker(dir *os.File) (stateDir string, ok bool) {
	fd, err := unix.Openat(int(dir.Fd()), oneOffMarker, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", false
	}
	f := os.NewFile(uintptr(fd), oneOffMarker)
	defer f.Close()
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	return string(b[:n]), true
}

// liveLease reports whether sandbox id has a lease, in the host-wide
// registry or under stateDir, whose process is alive.
func liveLease(stateDir, id string) bool {
	for _, p := range []string{filepath.Join(RegistryDir, id+".json"), filepath.Join(stateDir, "sandbox", "leases", id+".json")} {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		var l lease
		if err != nil || json.Unmarshal(b, &l) != nil || alive(l.PID) {
			return true // unreadable: assume live rather than remove a live run's files
		}
	}
	return false
}
