package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// sockmap relays paired sockets inside the kernel: socks holds the sockets
// by socket cookie, peers maps each cookie to its partner's, and the
// verdict program sends every skb a paired socket receives out of the
// partner (bpf_sk_redirect_hash without BPF_F_INGRESS). Unpaired sockets
// get SK_PASS, so their bytes reach user space as usual.
type sockmap struct {
	socks, peers *ebpf.Map
	progs        []*ebpf.Program
}

const sockmapSize = 4096

func newSockmap(strparser bool) (s *sockmap, err error) {
	s = &sockmap{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.socks, err = ebpf.NewMap(&ebpf.MapSpec{Name: "relay_socks", Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: sockmapSize})
	if err != nil {
		return nil, fmt.Errorf("sockhash (needs root and a kernel with BPF sockmap): %w", err)
	}
	s.peers, err = ebpf.NewMap(&ebpf.MapSpec{Name: "relay_peers", Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: sockmapSize})
	if err != nil {
		return nil, fmt.Errorf("peer map: %w", err)
	}
	verdict := ebpf.AttachSkSKBVerdict
	if strparser {
		verdict = ebpf.AttachSkSKBStreamVerdict
		// A parser that takes every skb whole: a message is whatever arrived.
		if err := s.attach(ebpf.AttachSkSKBStreamParser, asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, 0, asm.Word), // skb->len
			asm.Return(),
		}); err != nil {
			return nil, err
		}
	}
	if err := s.attach(verdict, verdictInsns(s.socks, s.peers)); err != nil {
		return nil, err
	}
	return s, nil
}

// verdictInsns is, in C:
//
//	__u64 me = bpf_get_socket_cookie(skb);
//	__u64 *peer = bpf_map_lookup_elem(&peers, &me);
//	if (!peer) return SK_PASS;
//	__u64 key = *peer;
//	return bpf_sk_redirect_hash(skb, &socks, &key, 0);
func verdictInsns(socks, peers *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.LoadMapPtr(asm.R1, peers.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R3, asm.R0, 0, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R3, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, socks.FD()),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkRedirectHash.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("pass"), // SK_PASS
		asm.Return(),
	}
}

func (s *sockmap) attach(at ebpf.AttachType, insns asm.Instructions) error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SkSKB, AttachType: at, Instructions: insns, License: "Dual MIT/GPL"})
	if err != nil {
		return fmt.Errorf("load %s program: %w", at, err)
	}
	s.progs = append(s.progs, p)
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: s.socks.FD(), Program: p, Attach: at}); err != nil {
		return fmt.Errorf("attach %s program: %w", at, err)
	}
	return nil
}

// pair puts a and b in the map as each other's partner. undo takes them
// out again (their bytes then reach user space) and must run before the
// sockets are closed.
func (s *sockmap) pair(a, b *net.TCPConn) (undo func(), err error) {
	ka, fa, err := cookieFD(a)
	if err != nil {
		return nil, err
	}
	kb, fb, err := cookieFD(b)
	if err != nil {
		return nil, err
	}
	undo = func() {
		s.peers.Delete(ka)
		s.peers.Delete(kb)
		s.socks.Delete(ka)
		s.socks.Delete(kb)
	}
	for _, e := range []struct {
		m    *ebpf.Map
		k, v uint64
	}{
		{s.socks, ka, fa}, {s.socks, kb, fb}, {s.peers, ka, kb}, {s.peers, kb, ka},
	} {
		if err := e.m.Update(e.k, e.v, ebpf.UpdateNoExist); err != nil {
			undo()
			return nil, fmt.Errorf("pair sockets: %w", err)
		}
	}
	return undo, nil
}

// cookieFD returns the socket's cookie (the key the program sees) and its
// descriptor (what a SOCKHASH update takes).
func cookieFD(c *net.TCPConn) (cookie, fd uint64, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	cerr := rc.Control(func(f uintptr) {
		fd = uint64(f)
		cookie, err = unix.GetsockoptUint64(int(f), unix.SOL_SOCKET, unix.SO_COOKIE)
	})
	return cookie, fd, errors.Join(cerr, err)
}

// Close detaches the programs (closing the map drops them) and frees the maps.
func (s *sockmap) Close() error {
	var errs []error
	for _, m := range []*ebpf.Map{s.socks, s.peers} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	for _, p := range s.progs {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}
