// Command relay is a bare TCP relay for measuring what any relay, with no
// policy at all, can reach on this machine. It moves bytes between the two
// sockets in one of the kernel's ways that keep them out of user space:
//
//	splice        io.Copy both ways; Go's TCPConn.ReadFrom uses splice(2)
//	              through a pipe, as cagent's CONNECT tunnels do
//	sockmap       a BPF sk_skb verdict program on a SOCKHASH redirects each
//	              received skb to the other socket's send side (sockmap
//	              "TCP splicing"): after the hand-off the relay process is
//	              never woken
//	sockmap-strp  the same behind a stream parser (the older attach point)
//
// bench/relay/run.sh runs it beside benchtool's raw upstream and prints how
// much of a direct download each mode relays. It is a measuring instrument,
// not a product path: it does not pass half-closes on, and in the sockmap
// modes it only tears down when the client goes. Nor is its sockmap hand-off
// safe for any protocol: bytes a client sends right behind its opening
// message can reach the receive queue before the socket joins the map, and
// were then seen duplicated (the verdict path took the whole skb, the part
// the relay had read included) or held until more bytes arrived. A client
// that waits for the upstream's answer, as benchtool's does, is safe: the
// upstream says nothing before the relay has paired the sockets.
//
//	relay --mode splice|sockmap|sockmap-strp --listen ADDR --target ADDR
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/cagent-dev/cagent/bench/rawproto"
)

func main() {
	mode := flag.String("mode", "splice", "splice | sockmap | sockmap-strp")
	listen := flag.String("listen", "127.0.0.1:19000", "address to accept clients on (loopback)")
	target := flag.String("target", "127.0.0.1:18099", "upstream every client is relayed to")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	r, err := newRelay(*mode, *target)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stderr, "relay: ready,", *mode)
	if err := r.serve(ctx, ln); err != nil {
		log.Fatal(err)
	}
}

type relay struct {
	target string
	sm     *sockmap // nil in splice mode
	wg     sync.WaitGroup
}

func newRelay(mode, target string) (*relay, error) {
	r := &relay{target: target}
	switch mode {
	case "splice":
	case "sockmap", "sockmap-strp":
		sm, err := newSockmap(mode == "sockmap-strp")
		if err != nil {
			return nil, err
		}
		r.sm = sm
	default:
		return nil, fmt.Errorf("unknown mode %q (splice, sockmap or sockmap-strp)", mode)
	}
	return r, nil
}

// serve relays every client accepted on ln until ctx ends, then closes ln,
// waits for the open relays to end and releases the BPF objects.
func (r *relay) serve(ctx context.Context, ln net.Listener) error {
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
	}()
	defer func() {
		r.wg.Wait()
		if r.sm != nil {
			r.sm.Close()
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		mu.Lock()
		open[c] = struct{}{}
		mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.handle(c.(*net.TCPConn)); err != nil && ctx.Err() == nil {
				log.Print(err)
			}
			mu.Lock()
			delete(open, c)
			mu.Unlock()
		}()
	}
}

func (r *relay) handle(client *net.TCPConn) error {
	defer client.Close()
	c, err := net.Dial("tcp", r.target)
	if err != nil {
		return err
	}
	up := c.(*net.TCPConn)
	defer up.Close()
	if r.sm == nil {
		done := make(chan struct{})
		go func() {
			io.Copy(up, client)
			up.CloseWrite()
			close(done)
		}()
		io.Copy(client, up)
		client.CloseWrite()
		<-done
		return nil
	}
	// The client speaks first. Its opening message is read and relayed in
	// user space, and both sockets join the map before the upstream can
	// answer: a verdict program only sees bytes that arrive after the
	// socket joined, so nothing may wait in a receive queue at the hand-off.
	hdr, err := rawproto.ReadOpening(client)
	if err != nil {
		return err
	}
	undo, err := r.sm.pair(client, up)
	if err != nil {
		return err
	}
	defer undo()
	if _, err := up.Write(hdr); err != nil {
		return err
	}
	// Only what the program passes (nothing, once paired) reaches user
	// space; the read ends when the client closes.
	var b [512]byte
	for {
		if _, err := client.Read(b[:]); err != nil {
			return nil
		}
	}
}
