package sandbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cagent-dev/cagent/sandbox/firewall"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"golang.org/x/sys/unix"
)

// lease is one sandbox's claim on a /30 and the names derived from it. It is
// recorded under <state>/sandbox/leases/<ID>.json before any resource is
// created, so `cagent gc` can remove what a crashed run left.
type lease struct {
	ID       string     `json:"id"` // 8 hex digits: the /30's base address
	Gateway  netip.Addr `json:"gateway"`
	Addr     netip.Addr `json:"addr"`
	PID      int        `json:"pid"`
	Runtime  string     `json:"runtime"`
	Created  string     `json:"created"`
	StateDir string     `json:"state_dir"` // <state-dir>/sandbox of the run
}

// RegistryDir is the host-wide copy of every live lease (on tmpfs, so it
// empties at boot with the namespaces it describes). `cagent gc --all`
// reads it to find what crashed runs of any state directory left.
const RegistryDir = "/run/cagent/leases"

func (l *lease) netns() string     { return "cagent-" + l.ID }
func (l *lease) hostIf() string    { return firewall.Sandboxes.IfPrefix + l.ID }
func (l *lease) container() string { return "cagent-" + l.ID }

func leaseID(base netip.Addr) string {
	b := base.As4()
	return fmt.Sprintf("%08x", binary.BigEndian.Uint32(b[:]))
}

// lockState takes the state directory's allocation lock.
func lockState(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "alloc.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// allocate claims the first free /30 of pool. The claim is first the lease
// file (this state directory) and then the named network namespace, whose
// exclusive creation is host-wide, so runs with different state
// directories never share a subnet either.
func allocate(dir string, pool netip.Prefix, l *lease) error {
	release, err := lockState(dir)
	if err != nil {
		return err
	}
	defer release()
	leases := filepath.Join(dir, "leases")
	if err := os.MkdirAll(leases, 0o700); err != nil {
		return err
	}
	base := pool.Masked().Addr().As4()
	start := binary.BigEndian.Uint32(base[:])
	n := uint32(1) << (32 - pool.Bits()) / 4
	for i := uint32(0); i < n; i++ {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], start+4*i)
		a := netip.AddrFrom4(b)
		l.ID = leaseID(a)
		l.Gateway = a.Next()
		l.Addr = l.Gateway.Next()
		p := filepath.Join(leases, l.ID+".json")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = json.NewEncoder(f).Encode(l)
		f.Close()
		if err != nil {
			os.Remove(p)
			return err
		}
		if err := netsetup.Create(l.netns()); err != nil {
			os.Remove(p)
			if errors.Is(err, netsetup.ErrExists) {
				continue // another state directory holds it
			}
			return err
		}
		// The namespace name is host-unique, so the registry entry is ours.
		if err := writeRegistry(l); err != nil {
			os.Remove(p)
			_ = netsetup.Delete(l.netns())
			return err
		}
		return nil
	}
	return fmt.Errorf("subnet pool %s is exhausted (run `cagent gc` to free subnets of crashed runs)", pool)
}

func writeRegistry(l *lease) error {
	if err := os.MkdirAll(RegistryDir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(RegistryDir, l.ID+".json"), b, 0o600)
}

func readLeases(dir string) ([]*lease, error) {
	return readLeaseDir(filepath.Join(dir, "leases"))
}

func readLeaseDir(dir string) ([]*lease, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*lease
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var l lease
		if json.Unmarshal(b, &l) != nil || !validID(l.ID) {
			continue
		}
		out = append(out, &l)
	}
	return out, nil
}

func removeLease(dir string, l *lease) error {
	var errs []error
	for _, p := range []string{filepath.Join(dir, "leases", l.ID+".json"), filepath.Join(RegistryDir, l.ID+".json")} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// validID accepts only the 8 hex digits allocate writes: a lease names
// paths and interfaces to delete, so it is checked before use.
func validID(id string) bool {
	if len(id) != 8 {
		return false
	}
	_, err := strconv.ParseUint(id, 16, 32)
	return err == nil
}
