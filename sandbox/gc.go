package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/cagent-dev/cagent/sandbox/firewall"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
)

// GCConfig configures GC.
type GCConfig struct {
	StateDir            string // default /var/lib/cagent
	RuncPath, RunscPath string // default: looked up in PATH
	Logger              *slog.Logger
}

// GC removes what crashed runs left behind: for every lease under the state
// directory whose process is gone, the container (runc and runsc state), the
// host nftables table, the veth, the network namespace, the bundle and the
// lease itself. Leases of live runs are left alone. It returns the IDs of
// the sandboxes it removed.
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
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	release, err := lockState(dir)
	if err != nil {
		return nil, err
	}
	defer release()
	leases, err := readLeases(dir)
	if err != nil {
		return nil, err
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
		if err := removeSandbox(c, dir, l); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: %w", l.ID, err))
			continue
		}
		c.Logger.Info("removed leftovers of a crashed run", "id", l.ID, "pid", l.PID)
		removed = append(removed, l.ID)
	}
	return removed, errors.Join(errs...)
}

func removeSandbox(c GCConfig, dir string, l *lease) error {
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
	var errs []error
	errs = append(errs, firewall.RemoveHost(l.ID))
	errs = append(errs, netsetup.DeleteLink(l.hostIf()))
	errs = append(errs, netsetup.Delete(l.netns()))
	errs = append(errs, os.RemoveAll(filepath.Join(dir, "bundles", l.ID)))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Empty cgroup directories the runtime could not remove.
	for _, ctl := range []string{"cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset", "systemd", "unified", ""} {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", ctl, "cagent", l.ID))
	}
	return removeLease(dir, l)
}
