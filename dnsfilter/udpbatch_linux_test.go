//go:build linux

package dnsfilter

import (
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestSockaddrAddrPort(t *testing.T) {
	v4 := func(a [4]byte, port uint16) (unix.RawSockaddrInet6, uint32) {
		var sa unix.RawSockaddrInet6
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		s4.Family, s4.Addr = unix.AF_INET, a
		p := (*[2]byte)(unsafe.Pointer(&s4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return sa, unix.SizeofSockaddrInet4
	}
	v6 := func(a [16]byte, port uint16) (unix.RawSockaddrInet6, uint32) {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return sa, unix.SizeofSockaddrInet6
	}
	tests := []struct {
		name string
		sa   func() (unix.RawSockaddrInet6, uint32)
		want string // "" for not ok
	}{
		{"v4", func() (unix.RawSockaddrInet6, uint32) { return v4([4]byte{10, 209, 0, 7}, 53) }, "10.209.0.7:53"},
		{"v4 high port", func() (unix.RawSockaddrInet6, uint32) { return v4([4]byte{127, 0, 0, 1}, 65534) }, "127.0.0.1:65534"},
		{"v6", func() (unix.RawSockaddrInet6, uint32) {
			return v6(netip.MustParseAddr("fd00::1").As16(), 4242)
		}, "[fd00::1]:4242"},
		{"v4-mapped v6", func() (unix.RawSockaddrInet6, uint32) {
			return v6(netip.MustParseAddr("::ffff:10.209.0.9").As16(), 1)
		}, "[::ffff:10.209.0.9]:1"},
		{"v4 too short", func() (unix.RawSockaddrInet6, uint32) { sa, _ := v4([4]byte{1, 2, 3, 4}, 5); return sa, 4 }, ""},
		{"v6 too short", func() (unix.RawSockaddrInet6, uint32) {
			sa, _ := v6(netip.MustParseAddr("fd00::1").As16(), 1)
			return sa, unix.SizeofSockaddrInet4
		}, ""},
		{"unix family", func() (unix.RawSockaddrInet6, uint32) {
			return unix.RawSockaddrInet6{Family: unix.AF_UNIX}, unix.SizeofSockaddrInet6
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sa, n := tt.sa()
			got, ok := sockaddrAddrPort(&sa, n)
			if tt.want == "" {
				if ok {
					t.Fatalf("got %v, want not ok", got)
				}
				return
			}
			if !ok || got.String() != tt.want {
				t.Fatalf("got %v %v, want %s", got, ok, tt.want)
			}
		})
	}
}

// TestNewUDPBatchRaw checks that a UDP socket gets the raw implementation
// on Linux (the point of it: see rawBatch) and anything else the portable one.
func TestNewUDPBatchRaw(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	if _, ok := newUDPBatch(pc).(*rawBatch); !ok {
		t.Errorf("UDP socket: got %T, want *rawBatch", newUDPBatch(pc))
	}
	var other net.PacketConn = struct{ net.PacketConn }{pc}
	if _, ok := newUDPBatch(other).(*portableBatch); !ok {
		t.Errorf("wrapped conn: got %T, want *portableBatch", newUDPBatch(other))
	}
}
