package netclass

import (
	"net/netip"
	"testing"
)

func TestOf(t *testing.T) {
	cases := []struct {
		addr string
		want Class
	}{
		// Public.
		{"8.8.8.8", Public},
		{"1.1.1.1", Public},
		{"93.184.216.34", Public},
		{"2606:4700:4700::1111", Public},
		{"2a00:1450:4001:80b::200e", Public},
		{"100.63.255.255", Public},
		{"100.128.0.0", Public},
		{"172.15.255.255", Public},
		{"172.32.0.0", Public},
		{"169.253.255.255", Public},
		{"11.0.0.0", Public},
		{"223.255.255.255", Public},
		// Metadata, before the ranges that contain it.
		{"169.254.169.254", Metadata},
		{"fd00:ec2::254", Metadata},
		{"100.100.100.200", Metadata},
		{"fe80::a9fe:a9fe", Metadata},
		{"::ffff:169.254.169.254", Metadata},
		{"64:ff9b::a9fe:a9fe", Metadata},
		{"64:ff9b::169.254.169.254", Metadata},
		// Link-local around the metadata address.
		{"169.254.169.253", LinkLocal},
		{"169.254.169.255", LinkLocal},
		{"169.254.0.1", LinkLocal},
		{"169.254.255.255", LinkLocal},
		{"fe80::1", LinkLocal},
		{"fe80::1%eth0", LinkLocal},
		{"::ffff:127.0.0.1%eth0", Loopback},
		{"fe80::a9fe:a9fe%1", Metadata},
		{"fd00::1%eth0", Private},
		{"febf::1", LinkLocal},
		// Loopback.
		{"127.0.0.1", Loopback},
		{"127.255.255.254", Loopback},
		{"::1", Loopback},
		{"::ffff:127.0.0.1", Loopback},
		{"64:ff9b::7f00:1", Loopback},
		// Private.
		{"10.0.0.1", Private},
		{"10.255.255.255", Private},
		{"172.16.0.1", Private},
		{"172.31.255.255", Private},
		{"192.168.1.1", Private},
		{"fc00::1", Private},
		{"fd12:3456::1", Private},
		{"fec0::1", Private},
		{"::ffff:10.1.2.3", Private},
		{"64:ff9b::10.1.2.3", Private},
		// CGNAT.
		{"100.64.0.1", CGNAT},
		{"100.127.255.255", CGNAT},
		{"100.100.100.199", CGNAT},
		// Multicast.
		{"224.0.0.1", Multicast},
		{"239.255.255.250", Multicast},
		{"ff02::1", Multicast},
		{"ff05::1:3", Multicast},
		// Unspecified.
		{"0.0.0.0", Unspecified},
		{"0.1.2.3", Unspecified},
		{"::", Unspecified},
		{"::ffff:0.0.0.0", Unspecified},
		// Reserved.
		{"192.0.0.170", Reserved},
		{"192.0.2.1", Reserved},
		{"198.18.0.1", Reserved},
		{"198.19.255.255", Reserved},
		{"198.51.100.1", Reserved},
		{"203.0.113.1", Reserved},
		{"192.88.99.1", Reserved},
		{"240.0.0.1", Reserved},
		{"255.255.255.255", Reserved},
		{"2001:db8::1", Reserved},
		{"3fff::1", Reserved},
		{"100::1", Reserved},
		{"2002:7f00:1::", Reserved},   // 6to4 embedding 127.0.0.1
		{"2002:808:808::1", Reserved}, // 6to4 embedding a public address: still refused
		{"2001::1", Reserved},         // Teredo
		{"64:ff9b:1::1", Reserved},
		{"::7f00:1", Reserved},   // IPv4-compatible ::127.0.0.1
		{"::a9fe:a9fe", Reserved}, // IPv4-compatible ::169.254.169.254
		// NAT64 of a public address is public.
		{"64:ff9b::808:808", Public},
	}
	for _, c := range cases {
		a := netip.MustParseAddr(c.addr)
		if got := Of(a); got != c.want {
			t.Errorf("Of(%s) = %q, want %q", c.addr, got, c.want)
		}
		if Forbidden(a) != (c.want != Public) {
			t.Errorf("Forbidden(%s) = %v", c.addr, Forbidden(a))
		}
	}
	if Of(netip.Addr{}) != Reserved || !Forbidden(netip.Addr{}) {
		t.Error("the zero Addr must be forbidden")
	}
}

// Every range's first and last address carries the range's class, unless a
// more specific range listed earlier claims it.
func TestRangeBounds(t *testing.T) {
	for i, r := range ranges {
		first := r.prefix.Addr()
		last := lastAddr(r.prefix)
		for _, a := range []netip.Addr{first, last} {
			want := r.class
			for _, earlier := range ranges[:i] {
				if earlier.prefix.Contains(a) {
					want = earlier.class
					break
				}
			}
			if a.Is6() && nat64.Contains(a) {
				continue
			}
			if a.Is4In6() {
				continue // classified as its IPv4 form
			}
			if got := Of(a); got != want {
				t.Errorf("Of(%s) = %q, want %q (range %s)", a, got, want, r.prefix)
			}
		}
		if r.class == Public {
			t.Errorf("range %s is listed as public", r.prefix)
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func FuzzOf(f *testing.F) {
	for _, s := range []string{"8.8.8.8", "169.254.169.254", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "fe80::1", "2002::1"} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		c := Of(a)
		// A mapped address is classified as its IPv4 form, and NAT64 as the
		// address it embeds.
		if a.Is4In6() && Of(a.Unmap()) != c {
			t.Fatalf("Of(%s) = %q but Of(%s) = %q", a, c, a.Unmap(), Of(a.Unmap()))
		}
		if a.Is6() && nat64.Contains(a) {
			b16 := a.As16()
			if v4 := netip.AddrFrom4([4]byte{b16[12], b16[13], b16[14], b16[15]}); Of(v4) != c {
				t.Fatalf("Of(%s) = %q but embedded %s is %q", a, c, v4, Of(v4))
			}
		}
		if c == Public && (a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalMulticast()) {
			t.Fatalf("Of(%s) = public, but net/netip says it is special", a)
		}
	})
}
