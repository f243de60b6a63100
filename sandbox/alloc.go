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
		if err := claimID(l); err != nil {
			os.Remove(p)
			if errors.Is(err, netsetup.ErrExists) {
				continue // another state directory holds it
			}
			return err
		}
		return nil
	}
	return fmt.Errorf("subnet pool %s is exhausted (run `cagent gc` to free subnets of crashed runs)", pool)
}

// hostLockPath is the lock, host-wide like the namespace names, under which
// a sandbox ID is claimed (namespace, then registry entry) and given up.
const hostLockPath = "/run/cagent/ids.lock"

// lockHost takes the host-wide ID lock. Lock order: a state directory's
// lock (lockState) first, then this one.
func lockHost() (release func(), err error) {
	if err := os.MkdirAll(filepath.Dir(hostLockPath), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(hostLockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", hostLockPath, err)
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// claimID creates l's namespace and registry entry. Whoever holds the
// namespace, whose name is host-unique, owns the registry entry of its ID.
func claimID(l *lease) error {
	unlock, err := lockHost()
	if err != nil {
		return err
	}
	defer unlock()
	if err := netsetup.Create(l.netns()); err != nil {
		return err
	}
	if err := writeRegistry(l); err != nil {
		_ = netsetup.Delete(l.netns())
		return err
	}
	return nil
}

// releaseID gives up l's ID: its registry entry first, while l still holds
// the namespace, then the namespace. The other order let a run of another
// state directory claim the ID in between, and then removed that run's
// entry, hiding its leftovers from `cagent gc --all` after a crash. If the
// namespace cannot be deleted the entry is written back for gc to find.
func releaseID(l *lease) error {
	unlock, err := lockHost()
	if err != nil {
		return err
	}
	defer unlock()
	if err := removeRegistry(l); err != nil {
		return err
	}
	if err := netsetup.Delete(l.netns()); err != nil {
		return errors.Join(err, writeRegistry(l))
	}
	return nil
}

// registryHolder returns the live run, other than l's, that the registry
// says holds l's ID now, or nil.
func registryHolder(l *lease) *lease {
	h, err := readLease(filepath.Join(RegistryDir, l.ID+".json"))
	if err != nil || h.same(l) || !alive(h.PID) {
		return nil
	}
	return h
}

// same reports whether two records describe one run's lease.
func (l *lease) same(o *lease) bool {
	return l.ID == o.ID && l.PID == o.PID && l.Created == o.Created && l.StateDir == o.StateDir
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
		if l, err := readLease(filepath.Join(dir, e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

func readLease(path string) (*lease, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var l lease
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !validID(l.ID) {
		return nil, fmt.Errorf("%s: invalid sandbox id %q", path, l.ID)
	}
	return &l, nil
}

// removeLease removes l's lease under dir (a state directory's sandbox
// directory) and its registry entry if that is still l's.
func removeLease(dir string, l *lease) error {
	return errors.Join(removeStateLease(dir, l), removeRegistry(l))
}

func removeStateLease(dir string, l *lease) error {
	if err := os.Remove(filepath.Join(dir, "leases", l.ID+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// removeRegistry removes the registry entry of l's ID if it describes l:
// an entry another run wrote since l's namespace went is that run's.
func removeRegistry(l *lease) error {
	p := filepath.Join(RegistryDir, l.ID+".json")
	cur, err := readLease(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil && !cur.same(l) {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
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
