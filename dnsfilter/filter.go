// Package dnsfilter is Cagent's DNS filter: the only resolver a sandbox can
// reach. It answers names the policy allows (with the gateway address, or
// with filtered upstream answers), refuses everything else, and defends
// against DNS tunnelling with per-name heuristics and a per-client budget of
// distinct names per registered domain.
package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/ratelimit"
	"github.com/cagent-dev/cagent/resolver"
)

// Defaults for the optional Config fields.
const (
	DefaultResolvConf   = "/etc/resolv.conf"
	DefaultQueryTimeout = 5 * time.Second
	// DefaultMaxInflight bounds concurrent UDP queries; past it datagrams are
	// dropped (the client retries), so a flood cannot grow memory without bound.
	DefaultMaxInflight = 1024
	// udpReadSize is the largest query datagram read; longer ones are cut
	// and answered FORMERR. Queries are small; this keeps memory bounded.
	udpReadSize = 4096
	// maxTCPConns bounds concurrent TCP connections.
	maxTCPConns = 256
	// tcpIdle closes idle TCP connections (RFC 7766 suggests seconds).
	tcpIdle = 10 * time.Second
	// serverUDPSize is the EDNS0 payload size we advertise and the most we
	// send over UDP (the DNS flag day 2020 value, avoids fragmentation).
	serverUDPSize = 1232
	// localTTL is the TTL of answers the filter makes up (aliases).
	localTTL = 60
)

// Config configures a Filter.
type Config struct {
	Policy    *policy.Policy   // required; SetPolicy swaps atomically
	Upstreams []netip.AddrPort // nil: policy dns.upstream, else /etc/resolv.conf
	// Gateway answers allowed names in gateway mode and <alias>.devbox.local;
	// required when the policy's dns.answer is gateway. IPv4 only.
	Gateway netip.Addr
	Audit   audit.Sink
	Logger  *slog.Logger
	Agent   string
	Metrics prometheus.Registerer // nil: private registry
	Clock   func() time.Time

	// Optional.
	CacheSize    int           // answers cached (0: DefaultCacheSize; -1: no cache)
	ResolvConf   string        // read when no upstream is configured (default /etc/resolv.conf)
	QueryTimeout time.Duration // bound on forwarding one query (default 5s)
	MaxInflight  int           // concurrent UDP queries (default 1024)
	// Resolver, when set, overrides the upstream options (tests, namespaces).
	ResolverOptions resolver.Options
}

// Validate checks the configuration without changing it.
func (c *Config) Validate() error {
	if c.Policy == nil {
		return errors.New("dnsfilter: Policy is required")
	}
	if err := checkPolicy(c.Policy, c.Gateway); err != nil {
		return err
	}
	if c.Gateway.IsValid() && !c.Gateway.Unmap().Is4() {
		return fmt.Errorf("dnsfilter: gateway %s is not an IPv4 address (sandboxes are IPv4-only)", c.Gateway)
	}
	for _, u := range c.Upstreams {
		if !u.IsValid() || u.Port() == 0 {
			return fmt.Errorf("dnsfilter: invalid upstream %q: use IP:port", u)
		}
	}
	if c.CacheSize < -1 {
		return fmt.Errorf("dnsfilter: CacheSize %d: use -1 (no cache), 0 (default) or a positive size", c.CacheSize)
	}
	if c.QueryTimeout < 0 || c.MaxInflight < 0 {
		return errors.New("dnsfilter: QueryTimeout and MaxInflight must not be negative")
	}
	return nil
}

// checkPolicy reports why p cannot drive a filter with this gateway.
func checkPolicy(p *policy.Policy, gw netip.Addr) error {
	if p.DNS.Tunneling.MaxLabelLength == 0 || p.DNS.RateLimit == nil {
		return errors.New("dnsfilter: policy was not validated (build it with policy.Parse or call Validate)")
	}
	if p.DNS.Answer == "gateway" && !gw.IsValid() {
		return errors.New("dnsfilter: the policy's dns.answer is gateway, which needs a gateway address (--gateway IP): the address allowed names resolve to")
	}
	return nil
}

// Filter is a DNS filter. Create it with New; serve it with ServeUDP and
// ServeTCP (any number of each); stop it with Close.
type Filter struct {
	cfg     Config
	log     *slog.Logger
	sink    audit.Sink
	now     func() time.Time
	met     *metrics
	cache   *cache
	budgets *budgets
	limiter *ratelimit.Limiter
	flight  singleflight.Group
	tpl     *templates
	fastN   atomic.Int64 // queries answered by the fast path (tests)
	state   atomic.Pointer[state]

	ctx    context.Context // cancelled by Close: aborts upstream exchanges
	cancel context.CancelFunc
	sem    chan struct{}
	tcpSem chan struct{}

	mu      sync.Mutex
	closed  bool
	closers map[io.Closer]struct{}
	wg      sync.WaitGroup
}

// state is what a policy change swaps in one step.
type state struct {
	p         *policy.Policy
	res       *resolver.Resolver
	upstreams []netip.AddrPort
}

// New returns a Filter. It fails with a clear error on bad configuration.
func New(cfg Config) (*Filter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Gateway.IsValid() {
		cfg.Gateway = cfg.Gateway.Unmap()
	}
	f := &Filter{cfg: cfg, log: cfg.Logger, sink: cfg.Audit, now: cfg.Clock, budgets: newBudgets(), tpl: newTemplates(), closers: map[io.Closer]struct{}{}}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.sink == nil {
		f.sink = audit.Discard
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.cfg.QueryTimeout == 0 {
		f.cfg.QueryTimeout = DefaultQueryTimeout
	}
	if f.cfg.MaxInflight == 0 {
		f.cfg.MaxInflight = DefaultMaxInflight
	}
	if f.cfg.ResolvConf == "" {
		f.cfg.ResolvConf = DefaultResolvConf
	}
	switch cfg.CacheSize {
	case 0:
		f.cache = newCache(DefaultCacheSize, cacheBytes)
	case -1:
		f.cache = newCache(0, 0)
	default:
		f.cache = newCache(cfg.CacheSize, cacheBytes)
	}
	f.limiter = ratelimit.New(f.now)
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	met, err := newMetrics(reg, func() float64 { return float64(f.cache.len()) })
	if err != nil {
		return nil, fmt.Errorf("dnsfilter: register metrics: %w", err)
	}
	f.met = met
	st, err := f.newState(cfg.Policy, nil)
	if err != nil {
		return nil, err
	}
	f.state.Store(st)
	f.sem = make(chan struct{}, f.cfg.MaxInflight)
	f.tcpSem = make(chan struct{}, maxTCPConns)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f, nil
}

// newState builds the state for p, reusing prev's resolver when the
// upstreams did not change.
func (f *Filter) newState(p *policy.Policy, prev *state) (*state, error) {
	ups := f.cfg.Upstreams
	if len(ups) == 0 {
		for i, u := range p.DNS.Upstream {
			ap, err := policy.ParseHostPort(u, 53)
			if err != nil {
				return nil, fmt.Errorf("dnsfilter: dns.upstream[%d]: %w", i, err)
			}
			ups = append(ups, ap)
		}
	}
	if len(ups) == 0 {
		var err error
		ups, err = resolver.FromResolvConf(f.cfg.ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("dnsfilter: no dns.upstream in the policy and none usable from the host: %w", err)
		}
	}
	if prev != nil && equalAddrPorts(prev.upstreams, ups) {
		return &state{p: p, res: prev.res, upstreams: prev.upstreams}, nil
	}
	return &state{p: p, res: resolver.New(ups, f.cfg.ResolverOptions), upstreams: ups}, nil
}

func equalAddrPorts(a, b []netip.AddrPort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SetPolicy swaps the policy atomically: queries in flight finish under the
// policy they started with. The cache, budgets and rate limits keep counting
// (a reload must not hand an agent a fresh tunnelling budget). A policy the
// filter cannot use (gateway mode without a gateway, unusable upstreams) is
// refused and logged, and the last good one stays in force; CheckPolicy
// reports the same thing beforehand.
func (f *Filter) SetPolicy(p *policy.Policy) {
	if err := f.applyPolicy(p); err != nil {
		f.met.reloads.WithLabelValues("error").Inc()
		f.log.Error("dns: policy refused, keeping the previous one", "err", err)
		return
	}
	f.met.reloads.WithLabelValues("ok").Inc()
}

// CheckPolicy reports whether SetPolicy would accept p.
func (f *Filter) CheckPolicy(p *policy.Policy) error {
	if p == nil {
		return errors.New("dnsfilter: nil policy")
	}
	if err := checkPolicy(p, f.cfg.Gateway); err != nil {
		return err
	}
	_, err := f.newState(p, f.state.Load())
	return err
}

func (f *Filter) applyPolicy(p *policy.Policy) error {
	if p == nil {
		return errors.New("dnsfilter: nil policy")
	}
	if err := checkPolicy(p, f.cfg.Gateway); err != nil {
		return err
	}
	st, err := f.newState(p, f.state.Load())
	if err != nil {
		return err
	}
	f.state.Store(st)
	f.budgets.rearm(p.DNS.Tunneling.DistinctNames)
	return nil
}

// Policy returns the policy in force.
func (f *Filter) Policy() *policy.Policy { return f.state.Load().p }

// track registers c to be closed by Close; false when already closed.
func (f *Filter) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.closers[c] = struct{}{}
	return true
}

func (f *Filter) untrack(c io.Closer) {
	f.mu.Lock()
	delete(f.closers, c)
	f.mu.Unlock()
}

// Close stops every Serve loop, closes their sockets and waits for queries
// in flight. It does not close the audit sink.
func (f *Filter) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	for c := range f.closers {
		c.Close()
	}
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	return nil
}

func (f *Filter) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// ServeUDP answers queries on pc until Close (then it returns nil) or a
// read error. pc is closed by Close.
//
// Readers (one per CPU) take datagrams in batches (recvmmsg on Linux),
// answer what the fast path can in place, reply in batches (sendmmsg), and
// hand every other query to its own goroutine, bounded by MaxInflight.
func (f *Filter) ServeUDP(pc net.PacketConn) error {
	if !f.track(pc) {
		pc.Close()
		return nil
	}
	f.wg.Add(1)
	defer f.wg.Done()
	n := max(1, runtime.GOMAXPROCS(0))
	errc := make(chan error, n)
	for range n {
		go func() { errc <- f.udpReader(pc) }()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			pc.Close() // stop the other readers
		}
	}
	if f.isClosed() {
		return nil
	}
	return first
}

// udpBatchSize is how many datagrams a reader takes (and replies it sends)
// per system call.
const udpBatchSize = 32

func (f *Filter) udpReader(pc net.PacketConn) error {
	b := newUDPBatch(pc)
	outBuf := replyBufs()
	key := make([]byte, 0, 260)
	var lastClient netip.Addr
	var lastKey string
	for {
		n, err := b.read()
		if err != nil {
			if f.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dns: read udp: %w", err)
		}
		w := 0
		for i := 0; i < n; i++ {
			wire, from, ok := b.datagram(i)
			if !ok {
				continue
			}
			client := from.Addr().Unmap()
			if client != lastClient || lastKey == "" {
				lastClient, lastKey = client, client.String()
			}
			start := time.Now()
			if r := f.fast(client, lastKey, wire, key, outBuf[w]); r != nil {
				outBuf[w] = r
				b.reply(i, r)
				w++
				f.met.queryTimeUDP.Observe(time.Since(start).Seconds())
				continue
			}
			f.slowUDP(pc, from, wire)
		}
		b.flush()
	}
}

// slowUDP answers one query on the full path in its own goroutine.
func (f *Filter) slowUDP(pc net.PacketConn, from netip.AddrPort, wire []byte) {
	select {
	case f.sem <- struct{}{}:
	default:
		f.met.dropped.Inc()
		return
	}
	bp := getBuf()
	n := copy(*bp, wire)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer func() { <-f.sem }()
		defer putBuf(bp)
		start := time.Now()
		out := f.handle(from.Addr().Unmap(), "udp", (*bp)[:n])
		if out == nil {
			return
		}
		if uc, ok := pc.(*net.UDPConn); ok {
			_, _ = uc.WriteToUDPAddrPort(out, from)
		} else {
			_, _ = pc.WriteTo(out, net.UDPAddrFromAddrPort(from))
		}
		f.met.queryTimeUDP.Observe(time.Since(start).Seconds())
	}()
}

// ServeTCP answers queries on connections accepted from ln until Close
// (then it returns nil) or an accept error. ln is closed by Close.
func (f *Filter) ServeTCP(ln net.Listener) error {
	if !f.track(ln) {
		ln.Close()
		return nil
	}
	f.wg.Add(1)
	defer f.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("dns: accept tcp: %w", err)
		}
		select {
		case f.tcpSem <- struct{}{}:
		default:
			c.Close()
			f.met.dropped.Inc()
			continue
		}
		if !f.track(c) {
			c.Close()
			<-f.tcpSem
			return nil
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.tcpSem }()
			defer f.untrack(c)
			defer c.Close()
			f.serveConn(c)
		}()
	}
}

// serveConn answers length-prefixed queries on one TCP connection, in order.
func (f *Filter) serveConn(c net.Conn) {
	var client netip.Addr
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		client = ta.AddrPort().Addr().Unmap()
	}
	clientKey := "unknown"
	if client.IsValid() {
		clientKey = client.String()
	}
	key := make([]byte, 0, 260)
	fastBuf := make([]byte, 0, dns.MinMsgSize)
	var hdr [2]byte
	buf := make([]byte, 0, 512)
	for {
		_ = c.SetReadDeadline(time.Now().Add(tcpIdle))
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(hdr[0])<<8 | int(hdr[1])
		if n < 12 {
			return
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		start := time.Now()
		out := f.fast(client, clientKey, buf, key, fastBuf)
		if out != nil {
			fastBuf = out
		} else {
			out = f.handle(client, "tcp", buf)
		}
		if out == nil {
			return
		}
		msg := make([]byte, 2+len(out))
		msg[0], msg[1] = byte(len(out)>>8), byte(len(out))
		copy(msg[2:], out)
		_ = c.SetWriteDeadline(time.Now().Add(tcpIdle))
		if _, err := c.Write(msg); err != nil {
			return
		}
		f.met.queryTimeTCP.Observe(time.Since(start).Seconds())
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, udpReadSize); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }
