package dnsfilter

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestUDPBatch echoes datagrams through each udpBatch implementation, from
// several clients at once, so one read takes several datagrams: every reply
// must reach the client that sent the datagram, with its bytes.
func TestUDPBatch(t *testing.T) {
	impls := []struct {
		name string
		make func(net.PacketConn) udpBatch
	}{
		{"default", newUDPBatch},
		{"portable", func(pc net.PacketConn) udpBatch { return newPortableBatch(pc) }},
	}
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		for _, impl := range impls {
			t.Run(impl.name+" "+network, func(t *testing.T) {
				pc, err := net.ListenPacket("udp", network)
				if err != nil {
					t.Skipf("no %s: %v", network, err)
				}
				t.Cleanup(func() { pc.Close() })
				b := impl.make(pc)
				const clients = 8
				conns := make([]net.Conn, clients)
				for i := range conns {
					c, err := net.Dial("udp", pc.LocalAddr().String())
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
					conns[i] = c
				}
				for i, c := range conns {
					if _, err := fmt.Fprintf(c, "query %d", i); err != nil {
						t.Fatal(err)
					}
				}
				got := 0
				for got < clients {
					pc.SetReadDeadline(time.Now().Add(5 * time.Second))
					n, err := b.read()
					if err != nil {
						t.Fatalf("read after %d datagrams: %v", got, err)
					}
					for i := range n {
						wire, from, ok := b.datagram(i)
						if !ok {
							t.Fatalf("datagram %d: no source", i)
						}
						if !from.Addr().IsLoopback() || from.Port() == 0 {
							t.Errorf("source %v: want a loopback address and port", from)
						}
						b.reply(i, append([]byte("reply to "), wire...))
					}
					b.flush()
					got += n
				}
				for i, c := range conns {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					buf := make([]byte, 64)
					n, err := c.Read(buf)
					if err != nil {
						t.Fatalf("client %d: %v", i, err)
					}
					if want := fmt.Sprintf("reply to query %d", i); string(buf[:n]) != want {
						t.Errorf("client %d got %q, want %q", i, buf[:n], want)
					}
				}
			})
		}
	}
}

// TestServeUDPIPv6 answers a query over IPv6 loopback through ServeUDP.
func TestServeUDPIPv6(t *testing.T) {
	pc, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	h := startFilter(t, "domains:\n  - domain: allowed.test\n")
	go h.f.ServeUDP(pc)
	h.udp = pc.LocalAddr().String()
	r := h.ask(t, "udp", "allowed.test.", 1)
	if len(r.Answer) != 1 {
		t.Fatalf("answer %v, want one record", r.Answer)
	}
	if got := netip.MustParseAddrPort(pc.LocalAddr().String()).Addr(); !got.Is6() {
		t.Fatalf("listener %v is not IPv6", got)
	}
}
