package dnsfilter

import (
	"net"
	"net/netip"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// udpBatch is how a UDP reader takes datagrams and sends replies, a batch
// at a time. newUDPBatch picks the Linux raw-syscall one (udpbatch_linux.go)
// when it can, else portableBatch.
type udpBatch interface {
	// read blocks until at least one datagram arrived and returns how many
	// (at most udpBatch) it took.
	read() (int, error)
	// datagram returns the i-th datagram read and its source; ok is false
	// for a source that is not a UDP address (never answered).
	datagram(i int) (wire []byte, from netip.AddrPort, ok bool)
	// reply queues b as the answer to datagram i; b must stay untouched
	// until flush.
	reply(i int, b []byte)
	// flush sends the queued replies; a reply the socket does not take is
	// dropped (the client retries).
	flush()
}

// portableBatch uses x/net's ReadBatch/WriteBatch (recvmmsg/sendmmsg on
// Linux) for IPv4 sockets, one datagram at a time otherwise.
type portableBatch struct {
	pc    net.PacketConn
	batch *ipv4.PacketConn
	in    []ipv4.Message
	out   []ipv4.Message
	w     int
}

func newPortableBatch(pc net.PacketConn) *portableBatch {
	b := &portableBatch{pc: pc, in: make([]ipv4.Message, udpBatchSize), out: make([]ipv4.Message, udpBatchSize)}
	if _, isUDP := pc.(*net.UDPConn); isUDP && pc.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		b.batch = ipv4.NewPacketConn(pc)
	}
	for i := range b.in {
		b.in[i].Buffers = [][]byte{make([]byte, udpReadSize)}
		b.out[i].Buffers = [][]byte{nil}
	}
	return b
}

func (b *portableBatch) read() (int, error) {
	if b.batch != nil {
		return b.batch.ReadBatch(b.in, 0)
	}
	var addr net.Addr
	var err error
	b.in[0].N, addr, err = b.pc.ReadFrom(b.in[0].Buffers[0])
	b.in[0].Addr = addr
	if err != nil {
		return 0, err
	}
	return 1, nil
}

func (b *portableBatch) datagram(i int) ([]byte, netip.AddrPort, bool) {
	m := &b.in[i]
	ua, ok := m.Addr.(*net.UDPAddr)
	if !ok {
		return nil, netip.AddrPort{}, false
	}
	return m.Buffers[0][:m.N], ua.AddrPort(), true
}

func (b *portableBatch) reply(i int, r []byte) {
	b.out[b.w].Buffers[0] = r
	b.out[b.w].Addr = b.in[i].Addr
	b.w++
}

func (b *portableBatch) flush() {
	for sent := 0; sent < b.w; {
		if b.batch == nil {
			_, _ = b.pc.WriteTo(b.out[sent].Buffers[0], b.out[sent].Addr)
			sent++
			continue
		}
		k, err := b.batch.WriteBatch(b.out[sent:b.w], 0)
		if err != nil || k == 0 {
			break // the client will retry
		}
		sent += k
	}
	for i := range b.w {
		b.out[i].Buffers[0], b.out[i].Addr = nil, nil
	}
	b.w = 0
}

// replyBufs are a reader's reply buffers, one per datagram of a batch.
func replyBufs() [][]byte {
	bufs := make([][]byte, udpBatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 0, dns.MinMsgSize)
	}
	return bufs
}
