// Command upstream is the benchmark's stand-in for the internet's DNS: a
// tiny, allocation-free UDP responder that answers every A query with one
// address (TTL 3600) and every other type with an empty NOERROR. It exists
// so that no benchmark query ever reaches the machine's real resolver.
package main

import (
	"encoding/binary"
	"flag"
	"log"
	"net"
	"runtime"
)

func main() {
	addr := flag.String("listen", "127.0.0.77:5300", "UDP address")
	flag.Parse()
	pc, err := net.ListenPacket("udp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("upstream listening on %s", pc.LocalAddr())
	udp := pc.(*net.UDPConn)
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		go serve(udp)
	}
	serve(udp)
}

func serve(c *net.UDPConn) {
	buf := make([]byte, 1500)
	out := make([]byte, 0, 1500)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			log.Fatal(err)
		}
		if r := answer(buf[:n], out[:0]); r != nil {
			_, _ = c.WriteToUDPAddrPort(r, from)
		}
	}
}

// answer builds the reply to q in out, or returns nil for anything that is
// not a one-question query.
func answer(q, out []byte) []byte {
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	// Walk the question name (no compression in queries).
	i := 12
	for i < len(q) && q[i] != 0 {
		if q[i]&0xC0 != 0 {
			return nil
		}
		i += int(q[i]) + 1
	}
	i += 5 // root label, qtype, qclass
	if i > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i-4:])
	out = append(out, q[:i]...)
	out[2] = 0x80 | q[2]&0x79               // QR, opcode, RD kept
	out[3] = 0x80                           // RA, NOERROR
	binary.BigEndian.PutUint16(out[6:], 0)  // ANCOUNT
	binary.BigEndian.PutUint16(out[8:], 0)  // NSCOUNT
	binary.BigEndian.PutUint16(out[10:], 0) // ARCOUNT: drop the OPT record
	if qtype == 1 {
		binary.BigEndian.PutUint16(out[6:], 1)
		out = append(out, 0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 93, 184, 216, 34)
	}
	return out
}
