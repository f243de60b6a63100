package dnsfilter

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestHostileNames: names whose presentation form hides dots, binary bytes
// or spaces never match a policy entry and never reach the upstream.
func TestHostileNames(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	for _, proto := range []string{"udp", "tcp"} {
		for _, name := range []string{
			`a\.b.wild.test.`,         // a dot inside a label
			`allowed\.test.`,          // one label that prints like the allowed name
			`\200\201\202.wild.test.`, // binary label
			`a\032b.wild.test.`,       // space
			`a\000.allowed.test.`,     // NUL
			`*.wild.test.`,            // a literal asterisk label
			`xn--ech-5cd.wild.test.`,  // punycode is just a name (allowed by the wildcard, counted)
		} {
			r := h.ask(t, proto, name, dns.TypeA)
			want := dns.RcodeNameError
			if strings.HasPrefix(name, "xn--") {
				want = dns.RcodeSuccess
			}
			if r.Rcode != want {
				t.Errorf("%s %s: %s, want %s", proto, name, dns.RcodeToString[r.Rcode], dns.RcodeToString[want])
			}
		}
	}
	for _, q := range h.up.asked() {
		if q != "xn--ech-5cd.wild.test. A" {
			t.Errorf("upstream was asked %q", q)
		}
	}
}

// TestClientEDNSOptionsNotForwarded: the filter asks upstream with a query
// of its own, so options an agent puts in its query (client subnet,
// cookies, padding: room for data) never leave the box; a huge query over
// TCP is answered and the connection stays usable.
func TestClientEDNSOptionsNotForwarded(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	m := new(dns.Msg)
	m.SetQuestion("opts.wild.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	opt := m.IsEdns0()
	opt.Option = append(opt.Option,
		&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 1, 2, 0)},
		&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"},
		&dns.EDNS0_LOCAL{Code: 65001, Data: []byte("secret-data")},
	)
	for _, proto := range []string{"udp", "tcp"} {
		if r := h.send(t, proto, m); r.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s: %s", proto, dns.RcodeToString[r.Rcode])
		}
	}
	// Near the 64 KiB TCP limit, mostly padding.
	big := m.Copy()
	big.IsEdns0().Option = append(big.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 60000)})
	c, err := net.Dial("tcp", h.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 2; i++ {
		wire, err := big.Pack()
		if err != nil {
			t.Fatal(err)
		}
		var hdr [2]byte
		binary.BigEndian.PutUint16(hdr[:], uint16(len(wire)))
		if _, err := c.Write(append(hdr[:], wire...)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(resp); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d: %v %v", i, err, r)
		}
	}
	h.up.mu.Lock()
	n := h.up.options
	h.up.mu.Unlock()
	if n != 0 {
		t.Fatalf("upstream received %d EDNS options from the client's queries", n)
	}
}

// TestIdleTCPConnectionsDoNotBlockUDP: holding every TCP slot open (a
// slowloris) leaves UDP answering, and refuses extra TCP connections
// instead of queueing them.
func TestIdleTCPConnectionsDoNotBlockUDP(t *testing.T) {
	h := startFilter(t, gatewayPolicy)
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := 0; i < maxTCPConns+20; i++ {
		c, err := net.Dial("tcp", h.tcp)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0}) // half a length prefix, then nothing
		conns = append(conns, c)
	}
	if r := h.ask(t, "udp", "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("UDP while TCP is full: %s", dns.RcodeToString[r.Rcode])
	}
	// The connections past the limit were closed, not parked.
	last := conns[len(conns)-1]
	last.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := last.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection over the limit still open: %v", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
