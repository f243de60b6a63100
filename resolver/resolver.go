// Package resolver is the data plane's DNS client: it asks the policy's
// upstream servers (never the Go or libc resolver, which would read the
// host's configuration behind the policy's back), with failover between them.
package resolver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// ErrNotFound is wrapped by lookups that found no such name or no address.
var ErrNotFound = errors.New("no such host")

// Options tunes a Resolver.
type Options struct {
	// Timeout bounds one exchange with one upstream (default 2s).
	Timeout time.Duration
	// DialContext, when set, is used to reach upstreams (tests; network namespaces).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Resolver sends queries to a fixed list of upstream servers.
type Resolver struct {
	upstreams []netip.AddrPort
	opts      Options
	// good is the index of the last upstream that answered; queries start there
	// so a dead first server costs one timeout, not one per query.
	good atomic.Int32
}

// New returns a Resolver for upstreams, tried in order after the last good one.
func New(upstreams []netip.AddrPort, opts Options) *Resolver {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	return &Resolver{upstreams: append([]netip.AddrPort(nil), upstreams...), opts: opts}
}

// Upstreams returns the configured servers.
func (r *Resolver) Upstreams() []netip.AddrPort { return append([]netip.AddrPort(nil), r.upstreams...) }

// FromResolvConf reads the nameserver lines of a resolv.conf file.
func FromResolvConf(path string) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	var out []netip.AddrPort
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		// Zone-scoped link-local servers ("fe80::1%eth0") are kept with their zone.
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no nameserver", path)
	}
	return out, nil
}

// Exchange sends m to the upstreams, trying each in turn until one answers
// (any rcode counts as an answer; SERVFAIL and REFUSED move on to the next).
// A truncated UDP reply is retried over TCP on the same server.
func (r *Resolver) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if len(r.upstreams) == 0 {
		return nil, errors.New("resolver: no upstream servers configured")
	}
	start := int(r.good.Load())
	var errs []error
	var fallback *dns.Msg
	for i := range r.upstreams {
		idx := (start + i) % len(r.upstreams)
		up := r.upstreams[idx]
		resp, err := r.exchangeOne(ctx, m, up)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			if fallback == nil {
				fallback = resp
			}
			continue
		}
		r.good.Store(int32(idx))
		return resp, nil
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, fmt.Errorf("resolver: every upstream failed: %w", errors.Join(errs...))
}

func (r *Resolver) exchangeOne(ctx context.Context, m *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	resp, err := r.exchangeNet(ctx, m, up, "udp")
	if err == nil && resp.Truncated {
		resp, err = r.exchangeNet(ctx, m, up, "tcp")
	}
	return resp, err
}

func (r *Resolver) exchangeNet(ctx context.Context, m *dns.Msg, up netip.AddrPort, network string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	var conn net.Conn
	var err error
	if r.opts.DialContext != nil {
		conn, err = r.opts.DialContext(ctx, network, up.String())
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, up.String())
	}
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	dc := &dns.Conn{Conn: conn, UDPSize: dns.DefaultMsgSize}
	q := m.Copy()
	if network == "udp" && q.IsEdns0() == nil {
		q.SetEdns0(dns.DefaultMsgSize, false)
	}
	if err := dc.WriteMsg(q); err != nil {
		return nil, err
	}
	for {
		var resp *dns.Msg
		if network == "udp" {
			resp, err = readUDP(conn)
		} else {
			resp, err = dc.ReadMsg()
		}
		if err != nil {
			return nil, err
		}
		// Ignore stray datagrams that do not answer this question (spoofing defence).
		if resp.Id != q.Id || !sameQuestion(resp, q) {
			if network == "tcp" {
				return nil, errors.New("reply does not match the query")
			}
			continue
		}
		return resp, nil
	}
}

// udpBufs are the read buffers of UDP exchanges. dns.Conn.ReadMsg makes a
// fresh 4 KiB buffer for every reply; reading into a pooled one and
// unpacking from a copy of the reply's own size (records may keep pointing
// into the bytes they were unpacked from) leaves ~40 times less garbage per
// exchange, which is what drives the collector under a flood of new names.
var udpBufs = sync.Pool{New: func() any { b := make([]byte, dns.DefaultMsgSize); return &b }}

func readUDP(conn net.Conn) (*dns.Msg, error) {
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	n, err := conn.Read(*bp)
	if err != nil {
		return nil, err
	}
	if n < 12 {
		return nil, dns.ErrShortRead
	}
	m := new(dns.Msg)
	if err := m.Unpack(bytes.Clone((*bp)[:n])); err != nil {
		return nil, err
	}
	return m, nil
}

func sameQuestion(a, b *dns.Msg) bool {
	if len(a.Question) != len(b.Question) {
		return false
	}
	for i := range a.Question {
		qa, qb := a.Question[i], b.Question[i]
		if qa.Qtype != qb.Qtype || qa.Qclass != qb.Qclass || !strings.EqualFold(qa.Name, qb.Name) {
			return false
		}
	}
	return true
}

// LookupAddrs returns the IPv4 and IPv6 addresses of host, following CNAMEs
// inside the answers. It asks A and AAAA in parallel. Errors wrap ErrNotFound
// when the name does not exist or has no address.
func (r *Resolver) LookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	fqdn := dns.Fqdn(strings.ToLower(host))
	type res struct {
		addrs []netip.Addr
		err   error
	}
	ch := make(chan res, 2)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		go func(qt uint16) {
			m := new(dns.Msg)
			m.SetQuestion(fqdn, qt)
			m.RecursionDesired = true
			resp, err := r.Exchange(ctx, m)
			if err != nil {
				ch <- res{err: err}
				return
			}
			if resp.Rcode == dns.RcodeNameError {
				ch <- res{err: fmt.Errorf("%w: %s", ErrNotFound, host)}
				return
			}
			if resp.Rcode != dns.RcodeSuccess {
				ch <- res{err: fmt.Errorf("resolve %s: %s", host, dns.RcodeToString[resp.Rcode])}
				return
			}
			ch <- res{addrs: addrsFor(resp, fqdn, qt)}
		}(qt)
	}
	var addrs []netip.Addr
	var errs []error
	for range 2 {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		addrs = append(addrs, r.addrs...)
	}
	if len(addrs) > 0 {
		// IPv4 first: sandboxes and most test networks are IPv4-only.
		v4 := addrs[:0:0]
		var v6 []netip.Addr
		for _, a := range addrs {
			if a.Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
		return append(v4, v6...), nil
	}
	if len(errs) > 0 {
		for _, e := range errs {
			if !errors.Is(e, ErrNotFound) {
				return nil, errors.Join(errs...)
			}
		}
		return nil, errs[0]
	}
	return nil, fmt.Errorf("%w: %s has no address", ErrNotFound, host)
}

// addrsFor collects the addresses of name of type qt in resp, following the
// CNAME chain that starts at name (bounded, so a loop cannot spin).
func addrsFor(resp *dns.Msg, name string, qt uint16) []netip.Addr {
	target := strings.ToLower(name)
	var out []netip.Addr
	for hops := 0; hops < 10; hops++ {
		next := ""
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, target) {
				continue
			}
			switch v := rr.(type) {
			case *dns.A:
				if qt == dns.TypeA {
					if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
						out = append(out, a)
					}
				}
			case *dns.AAAA:
				if qt == dns.TypeAAAA {
					if a, ok := netip.AddrFromSlice(v.AAAA); ok {
						out = append(out, a.Unmap())
					}
				}
			case *dns.CNAME:
				next = strings.ToLower(v.Target)
			}
		}
		if len(out) > 0 || next == "" {
			return out
		}
		target = next
	}
	return out
}
