// Package netclass names the address classes an agent must not reach through
// the proxy or DNS (SSRF defence): loopback, private, link-local, cloud
// metadata, CGNAT, multicast and the other special-purpose ranges.
package netclass

import "net/netip"

// Class is a named range of forbidden addresses.
type Class string

// The forbidden classes. Public is the only class that is allowed by default.
const (
	Public      Class = ""
	Loopback    Class = "loopback"
	Private     Class = "private"
	LinkLocal   Class = "link-local"
	Metadata    Class = "metadata"
	CGNAT       Class = "cgnat"
	Multicast   Class = "multicast"
	Unspecified Class = "unspecified"
	Reserved    Class = "reserved"
)

type classRange struct {
	prefix netip.Prefix
	class  Class
}

// Order matters: the more specific ranges (metadata) come before the ranges
// that contain them (link-local).
var ranges = func() []classRange {
	def := []struct {
		cidr  string
		class Class
	}{
		{"169.254.169.254/32", Metadata},
		{"fd00:ec2::254/128", Metadata},
		{"100.100.100.200/32", Metadata},  // Alibaba Cloud
		{"fe80::a9fe:a9fe/128", Metadata}, // OpenStack over IPv6
		{"0.0.0.0/8", Unspecified},
		{"::/128", Unspecified},
		{"127.0.0.0/8", Loopback},
		{"::1/128", Loopback},
		{"::/96", Reserved}, // deprecated IPv4-compatible addresses
		{"10.0.0.0/8", Private},
		{"172.16.0.0/12", Private},
		{"192.168.0.0/16", Private},
		{"fc00::/7", Private},
		{"fec0::/10", Private}, // deprecated site-local
		{"100.64.0.0/10", CGNAT},
		{"169.254.0.0/16", LinkLocal},
		{"fe80::/10", LinkLocal},
		{"224.0.0.0/4", Multicast},
		{"ff00::/8", Multicast},
		{"192.0.0.0/24", Reserved},    // IETF protocol assignments
		{"192.0.2.0/24", Reserved},    // TEST-NET-1
		{"198.18.0.0/15", Reserved},   // benchmarking
		{"198.51.100.0/24", Reserved}, // TEST-NET-2
		{"203.0.113.0/24", Reserved},  // TEST-NET-3
		{"240.0.0.0/4", Reserved},     // includes broadcast
		{"192.88.99.0/24", Reserved},  // deprecated 6to4 relay anycast
		{"64:ff9b:1::/48", Reserved},  // local-use NAT64
		{"2001:db8::/32", Reserved},   // documentation
		{"3fff::/20", Reserved},       // documentation (RFC 9637)
		{"100::/64", Reserved},        // discard
		{"2002::/16", Reserved},       // 6to4 embeds arbitrary IPv4
		{"2001::/32", Reserved},       // Teredo embeds arbitrary IPv4
		{"::ffff:0:0/96", Reserved},   // only reached when not unmapped
	}
	out := make([]classRange, len(def))
	for i, d := range def {
		out[i] = classRange{netip.MustParsePrefix(d.cidr), d.class}
	}
	return out
}()

// Of returns the class of addr; Public when it is in none. IPv4-mapped IPv6
// addresses are classified as their IPv4 form. NAT64 (64:ff9b::/96) addresses
// are classified by the IPv4 address they embed. A zone ("fe80::1%eth0") is
// ignored: netip.Prefix.Contains never matches a zoned address, which would
// otherwise make every zoned address public.
func Of(addr netip.Addr) Class {
	addr = addr.WithZone("").Unmap()
	if addr.Is6() && nat64.Contains(addr) {
		b := addr.As16()
		return Of(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	if !addr.IsValid() {
		return Reserved
	}
	for _, r := range ranges {
		if r.prefix.Contains(addr) {
			return r.class
		}
	}
	return Public
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Forbidden reports whether addr is in a forbidden class.
func Forbidden(addr netip.Addr) bool { return Of(addr) != Public }
