// Package firewall installs the nftables rules that confine a sandbox
// (design.md section 3): inside the sandbox's namespace, traffic may leave
// only for the gateway's proxy and DNS ports; on the host, one table shared
// by every sandbox accepts from a sandbox veth only those ports on that
// veth's own gateway address and drops everything else, including
// forwarding and host services listening on 0.0.0.0.
//
// Why one shared host table rather than one per sandbox: the kernel keeps a
// static key per netfilter hook (family, hook point) that is enabled while
// any base chain of any namespace is registered there, and enabling or
// disabling one patches kernel code (text_poke, with IPIs to every CPU). A
// per-sandbox host table, and the sandbox's inner table, were the first
// and last hooks of their kind on a host without other firewall rules, so
// every run paid that patching when it made them and again when it removed
// them (2-10 ms each way on 2 vCPUs, more under load). The shared table
// registers the input, forward and output hooks once and keeps them, so a
// run adds nothing to the host's ruleset and its inner table only counts
// up and down. The table holds no per-sandbox state: its rules match
// every interface named IfPrefix+ID by name prefix, and the gateway by
// `fib daddr . iif type local` (the destination is an address of the very
// interface the packet came in on), so a sandbox reaches neither the host's
// other addresses nor another sandbox's gateway.
package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Gateway ports: the only ones a sandbox may reach.
var (
	TCPPorts = []uint16{53, 80, 443, 3128}
	UDPPorts = []uint16{53}
)

// Rules describes one sandbox's inner confinement.
type Rules struct {
	Gateway     netip.Addr // host address on the veth
	SandboxNSFd int        // an open fd of the sandbox's netns
}

// InnerTable is the table's name inside the sandbox namespace.
const InnerTable = "cagent"

// InstallInner adds the table inside the sandbox's namespace. Its rules
// match interface names, which need not exist yet: a caller may install it
// while it creates the veth.
func (r Rules) InstallInner() error {
	if !r.Gateway.Is4() {
		return errors.New("firewall: gateway must be IPv4")
	}
	if err := r.installInner(); err != nil {
		return fmt.Errorf("sandbox nftables: %w", err)
	}
	return nil
}

var (
	accept = nftables.ChainPolicyAccept
	drop   = nftables.ChainPolicyDrop
)

func (r Rules) installInner() error {
	c, err := nftables.New(nftables.WithNetNSFd(r.SandboxNSFd))
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: InnerTable})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: join(ifname(expr.MetaKeyOIFNAME, "lo"), verdict(expr.VerdictAccept))})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: join(ifname(expr.MetaKeyIIFNAME, "lo"), verdict(expr.VerdictAccept))})
	for _, p := range TCPPorts {
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: join(ip4(16, r.Gateway), l4(unix.IPPROTO_TCP), port(2, p), verdict(expr.VerdictAccept))})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: join(ip4(12, r.Gateway), l4(unix.IPPROTO_TCP), port(0, p), verdict(expr.VerdictAccept))})
	}
	for _, p := range UDPPorts {
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: join(ip4(16, r.Gateway), l4(unix.IPPROTO_UDP), port(2, p), verdict(expr.VerdictAccept))})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: join(ip4(12, r.Gateway), l4(unix.IPPROTO_UDP), port(0, p), verdict(expr.VerdictAccept))})
	}
	return c.Flush()
}

// Host is the host-side table shared by sandboxes whose host veth ends are
// named IfPrefix+something. Runs Hold it while they exist; it stays when
// the last one ends (removing it would patch kernel code again, see the
// package comment) and RemoveIfUnused (`cagent gc`) removes it.
type Host struct {
	Table    string // nftables table name (family inet)
	IfPrefix string // matches the host end of every sandbox veth, and nothing else
	LockDir  string // where the table's lock files live (a root-only directory)
}

// Sandboxes is the host table of `cagent run` and `cagent up`. The version
// in its name changes with its rules, so that a table left by an older
// build is never taken for the current one.
var Sandboxes = Host{Table: "cagent_v1", IfPrefix: "cagent", LockDir: "/run/cagent"}

// Hold makes sure the table exists and keeps RemoveIfUnused from removing
// it until release is called (or the process exits, even killed: the hold
// is a shared flock). Call it before creating an interface it must confine.
func (h Host) Hold() (release func(), err error) {
	if err := os.MkdirAll(h.LockDir, 0o700); err != nil {
		return nil, err
	}
	users, _, err := lock(filepath.Join(h.LockDir, h.Table+".users"), unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	// Holding users, the table cannot go away under us: if it exists, done.
	c, err := nftables.New()
	if err != nil {
		users.Close()
		return nil, err
	}
	if _, err := c.ListTableOfFamily(h.Table, nftables.TableFamilyINet); err == nil {
		return func() { users.Close() }, nil
	}
	// Create it, once: concurrent runs serialise on the table's lock.
	mu, _, err := lock(filepath.Join(h.LockDir, h.Table+".lock"), unix.LOCK_EX)
	if err != nil {
		users.Close()
		return nil, err
	}
	defer mu.Close()
	if _, err := c.ListTableOfFamily(h.Table, nftables.TableFamilyINet); err == nil {
		return func() { users.Close() }, nil
	}
	if err := h.create(c); err != nil {
		users.Close()
		return nil, fmt.Errorf("host nftables: %w", err)
	}
	return func() { users.Close() }, nil
}

// create adds the table in one transaction: it appears with all its rules
// or not at all.
func (h Host) create(c *nftables.Conn) error {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: h.Table})
	// Priority just before the usual filter chains: our drops cannot be
	// undone by anyone's accept.
	prio := nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 1)
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: prio, Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: prio, Policy: &accept})
	// No rules: this chain keeps the output hook registered, so that a
	// sandbox's inner output chain is never the first or last one (see the
	// package comment).
	c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: prio, Policy: &accept})
	sb := c.AddChain(&nftables.Chain{Name: "sandbox", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: join(ifprefix(expr.MetaKeyIIFNAME, h.IfPrefix), jump(sb.Name))})
	// To the gateway, the address of the interface the packet came in on.
	local := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagDADDR: true, FlagIIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
	for _, p := range TCPPorts {
		c.AddRule(&nftables.Rule{Table: t, Chain: sb, Exprs: join(local, l4(unix.IPPROTO_TCP), port(2, p), verdict(expr.VerdictAccept))})
	}
	for _, p := range UDPPorts {
		c.AddRule(&nftables.Rule{Table: t, Chain: sb, Exprs: join(local, l4(unix.IPPROTO_UDP), port(2, p), verdict(expr.VerdictAccept))})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: sb, Exprs: verdict(expr.VerdictDrop)})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(ifprefix(expr.MetaKeyIIFNAME, h.IfPrefix), verdict(expr.VerdictDrop))})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(ifprefix(expr.MetaKeyOIFNAME, h.IfPrefix), verdict(expr.VerdictDrop))})
	return c.Flush()
}

// RemoveIfUnused removes the table if no run holds it and inUse (if not
// nil; e.g. "does an interface it confines still exist", for what a
// killed run left) reports false. It reports whether the table is gone.
func (h Host) RemoveIfUnused(inUse func() (bool, error)) (bool, error) {
	if err := os.MkdirAll(h.LockDir, 0o700); err != nil {
		return false, err
	}
	mu, _, err := lock(filepath.Join(h.LockDir, h.Table+".lock"), unix.LOCK_EX)
	if err != nil {
		return false, err
	}
	defer mu.Close()
	users, ok, err := lock(filepath.Join(h.LockDir, h.Table+".users"), unix.LOCK_EX|unix.LOCK_NB)
	if err != nil || !ok {
		return false, err
	}
	defer users.Close()
	if inUse != nil {
		if used, err := inUse(); used || err != nil {
			return false, err
		}
	}
	if ok, err := h.Exists(); err != nil || !ok {
		return err == nil, err
	}
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: h.Table})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("remove nftables table %s: %w", h.Table, err)
	}
	return true, nil
}

// RemoveIfIdle is RemoveIfUnused when no interface named IfPrefix+... is
// left in this namespace (a killed run's veth).
func (h Host) RemoveIfIdle() (bool, error) {
	return h.RemoveIfUnused(func() (bool, error) {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			if strings.HasPrefix(i.Name, h.IfPrefix) {
				return true, err
			}
		}
		return false, err
	})
}

// Exists reports whether the table is present.
func (h Host) Exists() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range ts {
		if t.Name == h.Table {
			return true, nil
		}
	}
	return false, nil
}

// lock opens (creating, not following a symlink) path and flocks it with
// how; with LOCK_NB, a lock held elsewhere reports ok false.
func lock(path string, how int) (f *os.File, ok bool, err error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f = os.NewFile(uintptr(fd), path)
	if err := unix.Flock(fd, how); err != nil {
		f.Close()
		if how&unix.LOCK_NB != 0 && errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	return f, true, nil
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

// ip4 matches IPv4 packets whose address at off (12 source, 16 destination) is a.
func ip4(off uint32, a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]},
	}
}

func l4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}}}
}

// port matches the transport port at off (0 source, 2 destination).
func port(off uint32, p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

// ifprefix matches interface names that start with prefix (nft's
// `iifname "prefix*"`: only the prefix's bytes are compared).
func ifprefix(key expr.MetaKey, prefix string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)}}
}
