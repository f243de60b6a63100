// Package netsetup creates and removes the named network namespaces and veth
// pairs that sandboxes (and the test suite's fake internet) live in. Every
// function leaves the calling goroutine's thread in the namespace it found it
// in: namespace switches happen on a dedicated, locked OS thread.
package netsetup

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NSDir is where named network namespaces are bind-mounted (as by `ip netns`).
const NSDir = "/var/run/netns"

// Path returns the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(NSDir, name) }

// Do runs fn on an OS thread switched into the named network namespace.
// Sockets created by fn stay in that namespace after Do returns.
func Do(name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	return doIn(ns, fn)
}

func doIn(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		ferr := fn()
		// Only a thread back in its original namespace may return to the
		// pool; otherwise it stays locked and exits with this goroutine.
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Create makes a new named network namespace with loopback up and IPv6
// disabled, without moving the caller into it.
func Create(name string) error {
	if err := os.MkdirAll(NSDir, 0o755); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if err != nil {
			// NewNamed may have unshared before failing.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			if errors.Is(err, os.ErrExist) {
				// Someone else's namespace: never remove it.
				errc <- fmt.Errorf("create netns %s: %w", name, ErrExists)
				return
			}
			// Ours may be half made (file created, mount failed).
			_ = Delete(name)
			errc <- fmt.Errorf("create netns %s: %w", name, err)
			return
		}
		ns.Close()
		ferr := setupInside()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		if ferr != nil {
			_ = Delete(name)
		}
		errc <- ferr
	}()
	return <-errc
}

// setupInside runs in the new namespace: IPv6 off, lo up.
func setupInside() error {
	for _, k := range []string{"all", "default", "lo"} {
		p := "/proc/sys/net/ipv6/conf/" + k + "/disable_ipv6"
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("disable ipv6: %w", err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// Delete removes a named namespace; a missing one is not an error.
func Delete(name string) error {
	p := Path(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Release drops the named namespace's bind mount, so that the kernel
// destroys the namespace (and every veth pair with an end in it) once
// nothing else holds it, but keeps the name's file: the name stays claimed
// (Create fails with ErrExists) until Delete, so that no one re-creates it,
// and its veth names, before the kernel has finished.
func Release(name string) error {
	p := Path(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	return nil
}

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// List returns the names of namespaces in NSDir.
func List() ([]string, error) {
	ents, err := os.ReadDir(NSDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

// Veth describes a veth pair between the host and a named namespace.
type Veth struct {
	HostName string       // interface name on the host (<= 15 bytes); the atomic claim on a subnet
	PeerName string       // interface name inside the namespace (e.g. eth0)
	NS       string       // namespace name
	HostAddr netip.Prefix // e.g. 10.209.0.1/30
	PeerAddr netip.Prefix // e.g. 10.209.0.2/30
	// Gateway, if valid, is added inside the namespace as a host route
	// (already covered by the connected route; set only for clarity). No
	// default route is ever added.
}

// ErrExists means the namespace or host interface name is taken (by another run).
var ErrExists = errors.New("interface exists")

// Add creates the pair, assigns addresses and brings both ends up. The host
// end's creation is the atomic claim: if it exists, Add returns ErrExists
// and changes nothing.
func (v Veth) Add() error {
	ns, err := netns.GetFromName(v.NS)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", v.NS, err)
	}
	defer ns.Close()
	la := netlink.NewLinkAttrs()
	la.Name = v.HostName
	// One queue each way, for both ends, said explicitly: the kernel's
	// default is one too, but when the request does not say so the veth
	// driver first makes one queue per CPU and then shrinks the device to
	// one, which waits for an expedited RCU grace period (synchronize_net,
	// IPIs to every CPU) per end, under the rtnl lock.
	la.NumTxQueues, la.NumRxQueues = 1, 1
	link := &netlink.Veth{LinkAttrs: la, PeerName: v.PeerName, PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(link); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return ErrExists
		}
		return fmt.Errorf("add veth %s: %w", v.HostName, err)
	}
	if err := v.configure(ns); err != nil {
		_ = DeleteLink(v.HostName)
		return err
	}
	return nil
}

// WaitUp waits (at most timeout) until the pair carries traffic. The kernel
// activates a new link asynchronously (link watch); a packet sent before is
// dropped, and a first SYN then waits a second for its retransmission.
// Callers overlap this with other work and call it before first use.
func (v Veth) WaitUp(timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(time.Millisecond) {
		l, err := netlink.LinkByName(v.HostName)
		if err != nil {
			return err
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("veth %s not up after %v", v.HostName, timeout)
		}
	}
}

func (v Veth) configure(ns netns.NsHandle) error {
	host, err := netlink.LinkByName(v.HostName)
	if err != nil {
		return err
	}
	if err := disableIPv6(v.HostName); err != nil {
		return err
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipnet(v.HostAddr)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", v.HostAddr, v.HostName, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	return doIn(ns, func() error {
		peer, err := netlink.LinkByName(v.PeerName)
		if err != nil {
			return err
		}
		if err := disableIPv6(v.PeerName); err != nil {
			return err
		}
		if err := netlink.AddrAdd(peer, &netlink.Addr{IPNet: ipnet(v.PeerAddr)}); err != nil {
			return fmt.Errorf("address %s on %s: %w", v.PeerAddr, v.PeerName, err)
		}
		return netlink.LinkSetUp(peer)
	})
}

func disableIPv6(ifname string) error {
	p := "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6"
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable ipv6 on %s: %w", ifname, err)
	}
	return nil
}

// DeleteLink removes a host interface (and so its veth peer); a missing one
// is not an error.
func DeleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return netlink.LinkDel(l)
}

// LinkNames lists the host's interface names.
func LinkNames() ([]string, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.Attrs().Name)
	}
	return out, nil
}

// AddAddr adds an extra address to an interface inside a namespace.
func AddAddr(nsName, ifname string, addr netip.Prefix) error {
	return Do(nsName, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: ipnet(addr)})
	})
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// WaitGone waits (at most timeout) until the host interface name no longer
// exists and reports whether it went. Used after removing a namespace: the
// kernel destroys a veth pair with the namespace of either end, in its
// batched namespace cleanup, which is cheaper than deleting the link (that
// waits for RCU callbacks in the caller's syscall).
func WaitGone(name string, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		_, err := netlink.LinkByName(name)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		time.Sleep(250 * time.Microsecond)
	}
}
