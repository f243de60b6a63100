// Package firewall installs the nftables rules that confine a sandbox
// (design.md section 3): inside the sandbox's namespace, traffic may leave
// only for the gateway's proxy and DNS ports; on the host, a per-sandbox
// table accepts from the sandbox's veth only those ports on the gateway
// address and drops everything else, including forwarding and host services
// listening on 0.0.0.0.
package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TablePrefix starts the name of every host table this package creates.
const TablePrefix = "cagent-"

// Gateway ports: the only ones a sandbox may reach.
var (
	TCPPorts = []uint16{53, 80, 443, 3128}
	UDPPorts = []uint16{53}
)

// Rules describes one sandbox's confinement.
type Rules struct {
	ID          string     // names the host table: cagent-<ID>
	HostIf      string     // host end of the sandbox veth
	Gateway     netip.Addr // host address on the veth
	SandboxNSFd int        // an open fd of the sandbox's netns, for the inner table
}

// HostTable returns the name of the host-side table.
func (r Rules) HostTable() string { return TablePrefix + r.ID }

// InnerTable is the table's name inside the sandbox namespace.
const InnerTable = "cagent"

// Install adds the inner and host tables atomically per namespace.
func (r Rules) Install() error {
	if !r.Gateway.Is4() {
		return errors.New("firewall: gateway must be IPv4")
	}
	if err := r.installInner(); err != nil {
		return fmt.Errorf("sandbox nftables: %w", err)
	}
	if err := r.installHost(); err != nil {
		return fmt.Errorf("host nftables: %w", err)
	}
	return nil
}

// InstallInner adds only the table inside the sandbox's namespace, and
// InstallHost only the host table: a caller may install the inner one
// while it creates the veth (the inner rules match interface names, which
// need not exist yet), and the host one once the veth, its claim on the
// name, exists.
func (r Rules) InstallInner() error {
	if !r.Gateway.Is4() {
		return errors.New("firewall: gateway must be IPv4")
	}
	if err := r.installInner(); err != nil {
		return fmt.Errorf("sandbox nftables: %w", err)
	}
	return nil
}

// InstallHost: see InstallInner.
func (r Rules) InstallHost() error {
	if !r.Gateway.Is4() {
		return errors.New("firewall: gateway must be IPv4")
	}
	if err := r.installHost(); err != nil {
		return fmt.Errorf("host nftables: %w", err)
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

func (r Rules) installHost() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: r.HostTable()})
	// Priority just before the usual filter chains: our drops cannot be
	// undone by anyone's accept.
	prio := nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 1)
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: prio, Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: prio, Policy: &accept})
	from := ifname(expr.MetaKeyIIFNAME, r.HostIf)
	for _, p := range TCPPorts {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: join(from, ip4(16, r.Gateway), l4(unix.IPPROTO_TCP), port(2, p), verdict(expr.VerdictAccept))})
	}
	for _, p := range UDPPorts {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: join(from, ip4(16, r.Gateway), l4(unix.IPPROTO_UDP), port(2, p), verdict(expr.VerdictAccept))})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: join(from, verdict(expr.VerdictDrop))})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(from, verdict(expr.VerdictDrop))})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(ifname(expr.MetaKeyOIFNAME, r.HostIf), verdict(expr.VerdictDrop))})
	return c.Flush()
}

// RemoveHost deletes the host table of a sandbox; a missing one is not an error.
func RemoveHost(id string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TablePrefix + id})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// HostTables lists the IDs of cagent host tables present.
func HostTables() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, t := range ts {
		if id, ok := strings.CutPrefix(t.Name, TablePrefix); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
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
