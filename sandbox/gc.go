package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cagent-dev/cagent/sandbox/firewall"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"golang.org/x/sys/unix"
)

// GCConfig configures GC.
type GCConfig struct {
	StateDir string // default /var/lib/cagent
	// All also collects, from the host-wide registry (RegistryDir), the
	// leftovers of crashed runs of any state directory.
	All                 bool
	RuncPath, RunscPath string // default: looked up in PATH
	Logger              *slog.Logger
	// Shm is where one-off runs keep their agent directory (default /dev/shm).
	Shm string
	// OnDirRemoved, if set, is called with each one-off agent directory removed.
	OnDirRemoved func(dir string)
}

// GC removes what crashed runs left behind: for every lease under the state
// directory whose process is gone, the container (runc and runsc state), the
// veth, the network namespace, the bundle and the lease itself; then the
// host nftables table shared by all sandboxes, if no sandbox is left; then
// the one-off agent directories (see OneOffDir) that belong to no live run. Leases of live runs are left alone. It returns the
// IDs of the sandboxes it removed.
func GC(ctx context.Context, c GCConfig) ([]string, error) {
	if c.StateDir == "" {
		c.StateDir = "/var/lib/cagent"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	dir := filepath.Join(c.StateDir, "sandbox")
	var leases []*lease
	if _, err := os.Stat(dir); err == nil {
		release, err := lockState(dir)
		if err != nil {
			return nil, err
		}
		defer release()
		if leases, err = readLeases(dir); err != nil {
			return nil, err
		}
	}
	if c.All {
		reg, err := readLeaseDir(RegistryDir)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, l := range leases {
			seen[l.ID] = true
		}
		for _, l := range reg {
			if !seen[l.ID] {
				leases = append(leases, l)
			}
		}
	}
	var removed []string
	var errs []error
	for _, l := range leases {
		if ctx.Err() != nil {
			return removed, ctx.Err()
		}
		if alive(l.PID) {
			continue
		}
		ldir := dir
		if l.StateDir != "" && filepath.IsAbs(l.StateDir) {
			ldir = l.StateDir
		}
		if err := removeSandbox(c, ldir, l); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: %w", l.ID, err))
			continue
		}
		c.Logger.Info("removed leftovers of a crashed run", "id", l.ID, "pid", l.PID)
		removed = append(removed, l.ID)
	}
	// The host table shared by all sandboxes stays after the last run (see
	// package firewall); gc removes it once no run holds it and no
	// interface it confines is left (a killed run's veth, of a state
	// directory this gc did not look at).
	if len(errs) == 0 {
		gone, err := firewall.Sandboxes.RemoveIfIdle()
		if err != nil {
			errs = append(errs, err)
		} else if gone {
			c.Logger.Debug("host nftables table removed", "table", firewall.Sandboxes.Table)
		}
	}
	// The one-off agent directories (CA, byte budget) of runs killed before
	// they could remove them. After the leases above: a crashed run's
	// lease is gone by now, so its directory goes too.
	if c.Shm == "" {
		c.Shm = "/dev/shm"
	}
	dirs, err := gcOneOffDirs(c.Shm, c.StateDir, c.All, func(id string) bool { return liveLease(c.StateDir, id) })
	for _, d := range dirs {
		c.Logger.Info("removed the one-off agent directory of a crashed run", "dir", d)
		if c.OnDirRemoved != nil {
			c.OnDirRemoved(d)
		}
	}
	errs = append(errs, err)
	return removed, errors.Join(errs...)
}

func removeSandbox(c GCConfig, dir string, l *lease) error {
	unlock, err := lockHost()
	if err != nil {
		return err
	}
	defer unlock()
	if h := registryHolder(l); h != nil {
		// l's run gave its ID up (or the host rebooted) and a live run of
		// another state directory claimed it since: the namespace, veth,
		// container name and cgroup of that ID are the live run's. Only
		// what is l's own, under dir, goes.
		var errs []error
		for _, rt := range []string{"runc", "runsc"} {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, rt, l.container())))
		}
		errs = append(errs, os.RemoveAll(filepath.Join(dir, "bundles", l.ID)), removeStateLease(dir, l))
		return errors.Join(errs...)
	}
	for _, rt := range []struct{ path, name, root string }{{c.RuncPath, "runc", "runc"}, {c.RunscPath, "runsc", "runsc"}} {
		bin, err := lookRuntime(rt.path, rt.name)
		if err != nil {
			continue
		}
		root := filepath.Join(dir, rt.root)
		if _, err := os.Stat(filepath.Join(root, l.container())); err != nil {
			continue
		}
		_ = exec.Command(bin, "--root", root, "delete", "--force", l.container()).Run()
	}
	// A runtime whose state is gone (or that was killed itself) may leave
	// the command running: kill whatever is still in the sandbox's cgroup.
	killCgroup(l.ID)
	var errs []error
	errs = append(errs, netsetup.DeleteLink(l.hostIf()))
	errs = append(errs, netsetup.Delete(l.netns()))
	errs = append(errs, os.RemoveAll(filepath.Join(dir, "bundles", l.ID)))
	if base, ok := memBundleBase(false); ok {
		errs = append(errs, os.RemoveAll(filepath.Join(base, l.ID)))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Empty cgroup directories the runtime could not remove.
	for _, ctl := range cgroupControllers {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", ctl, "cagent", l.ID))
	}
	return removeLease(dir, l)
}

var cgroupControllers = []string{"pids", "memory", "cpu", "cpuacct", "blkio", "devices", "freezer", "cpuset", "systemd", "unified", ""}

// killCgroup SIGKILLs every process in the sandbox's cgroup (v1 or v2).
func killCgroup(id string) {
	for range 10 {
		found := false
		for _, ctl := range cgroupControllers {
			b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctl, "cagent", id, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = unix.Kill(pid, unix.SIGKILL)
					found = true
				}
			}
		}
		if !found {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
