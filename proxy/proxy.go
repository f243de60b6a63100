package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/budget"
	"github.com/cagent-dev/cagent/credential"
	"github.com/cagent-dev/cagent/internal/h1"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/ratelimit"
	"github.com/cagent-dev/cagent/resolver"
	"github.com/cagent-dev/cagent/tlsca"
	"github.com/prometheus/client_golang/prometheus"
)

// copyBufSize is the tunnel and body copy buffer size.
const copyBufSize = 32 << 10

// Proxy is the egress proxy. Build one with New; it is safe for concurrent use.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	clock func() time.Time
	// realClock: clock is time.Now (no Config.Clock), so a reading of it
	// can stamp the log line as well as the event.
	realClock bool
	dialer    net.Dialer
	ca        *tlsca.CA
	budget    *budget.Tracker
	limiter   *ratelimit.Limiter
	names     *nameBudget // distinct names resolved per wildcard entry
	creds     *credential.Resolver
	metrics   *metrics
	rp        *httputil.ReverseProxy
	bufs      sync.Pool

	st atomic.Pointer[state]

	tunnels atomic.Int64
	inner   *h1.Server    // serves requests inside intercepted tunnels
	innerLn *chanListener // feeds it

	mu        sync.Mutex
	closed    bool
	servers   map[*h1.Server]struct{}
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{} // hijacked and tunnelled connections
	serving   int
	wg        sync.WaitGroup
}

// state is everything derived from one policy. A reload builds a new state;
// requests and tunnels keep the state they started with.
type state struct {
	pol           *policy.Policy
	resolver      *resolver.Resolver
	dns           *dnsCache // answers of resolver, for their TTL
	rootCAs       *x509.CertPool
	upstreamProxy *url.URL

	pool upstreamPool // idle connections of the forwarder

	mu         sync.Mutex
	transports map[string]*http.Transport // ReverseProxy's, for protocol upgrades

	// The key and rule strings of pol's entries (dest.key, dest.rule),
	// made once instead of per request.
	entryRules map[*policy.Domain]string
	rangeNames map[*policy.IPRange]destNames
}

type destNames struct{ key, rule string }

func (st *state) nameEntries() {
	st.entryRules = make(map[*policy.Domain]string, len(st.pol.Domains))
	for i := range st.pol.Domains {
		e := &st.pol.Domains[i]
		st.entryRules[e] = (&dest{entry: e}).rule()
	}
	st.rangeNames = make(map[*policy.IPRange]destNames, len(st.pol.IPRanges))
	for i := range st.pol.IPRanges {
		r := &st.pol.IPRanges[i]
		d := &dest{rng: r}
		st.rangeNames[r] = destNames{key: d.key(), rule: d.rule()}
	}
}

// nameDest gives d the key and rule strings made for its entry, when it
// has one of st's entries.
func (st *state) nameDest(d *dest) {
	switch {
	case d.entry != nil:
		if r, ok := st.entryRules[d.entry]; ok {
			d.k, d.r = d.entry.Domain, r
		}
	case d.rng != nil:
		if n, ok := st.rangeNames[d.rng]; ok {
			d.k, d.r = n.key, n.rule
		}
	}
}

// New builds a proxy: it loads or creates the CA and opens the budget
// counters under cfg.StateDir.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard
	}
	realClock := cfg.Clock == nil
	if realClock {
		cfg.Clock = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("proxy: state dir: %w", err)
	}
	ca, err := tlsca.LoadOrCreate(cfg.StateDir, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	bt, err := budget.Open(filepath.Join(cfg.StateDir, "egress-budget.json"), cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Logger,
		clock:     cfg.Clock,
		realClock: realClock,
		dialer:    net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		ca:        ca,
		budget:    bt,
		limiter:   ratelimit.New(cfg.Clock),
		names:     newNameBudget(),
		creds:     &credential.Resolver{LookupEnv: cfg.LookupEnv, Secrets: cfg.Secrets},
		servers:   map[*h1.Server]struct{}{},
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
	}
	p.bufs.New = func() any { b := make([]byte, copyBufSize); return &b }
	p.metrics, err = newMetrics(cfg.Metrics, p)
	if err != nil {
		bt.Close()
		return nil, err
	}
	errLog := log.New(slogWriter{p.log}, "", 0)
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      roundTripper{p},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.proxyError,
		BufferPool:     bufPool{&p.bufs},
		// 0: ReverseProxy flushes streaming responses (SSE, unknown length)
		// on every write by itself, and batches the rest.
		FlushInterval: 0,
		ErrorLog:      errLog,
	}
	p.innerLn = newChanListener()
	p.inner = &h1.Server{
		Handler:           http.HandlerFunc(p.serveIntercepted),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       cfg.Policy.Proxy.IdleTimeout.D(),
		MaxHeaderBytes:    int(cfg.Policy.Proxy.MaxHeaderBytes),
		ErrorLog:          errLog,
		ConnContext:       connContext,
	}
	p.st.Store(p.newState(cfg.Policy))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.inner.Serve(p.innerLn)
	}()
	return p, nil
}

// newState derives the resolver, roots and upstream proxy from pol.
func (p *Proxy) newState(pol *policy.Policy) *state {
	st := &state{pol: pol, transports: map[string]*http.Transport{}}
	st.nameEntries()
	ups := p.cfg.Upstreams
	if len(ups) == 0 {
		for _, u := range pol.DNS.Upstream {
			if ap, err := policy.ParseHostPort(u, 53); err == nil {
				ups = append(ups, ap)
			}
		}
	}
	if len(ups) == 0 {
		path := p.cfg.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		var err error
		if ups, err = resolver.FromResolvConf(path); err != nil {
			p.log.Error("no DNS upstream for the proxy; every name will fail to resolve", "err", err)
		}
	}
	st.resolver = resolver.New(ups, resolver.Options{DialContext: p.cfg.DialContext})
	st.dns = newDNSCache(st.resolver, pol.DNS.CacheTTL.D(), p.clock)
	st.rootCAs = p.cfg.RootCAs
	if st.rootCAs == nil && pol.Proxy.CABundle != "" {
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(pol.Proxy.CABundle)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			// Fail closed: an empty pool verifies nothing.
			p.log.Error("proxy.ca_bundle unreadable or holds no certificate; upstream TLS will fail", "file", pol.Proxy.CABundle, "err", err)
		}
		st.rootCAs = pool
	}
	if pol.Proxy.UpstreamProxy != "" {
		st.upstreamProxy, _ = url.Parse(pol.Proxy.UpstreamProxy)
	}
	return st
}

// SetPolicy applies pol to new requests and tunnels. Requests in flight and
// open tunnels finish under the policy they started with.
func (p *Proxy) SetPolicy(pol *policy.Policy) {
	if pol == nil {
		return
	}
	old := p.st.Swap(p.newState(pol))
	if old != nil {
		old.closeIdle()
	}
	keys := map[string]bool{}
	for i := range pol.Domains {
		keys[pol.Domains[i].Domain] = true
	}
	for i := range pol.IPRanges {
		keys["ip:"+pol.IPRanges[i].CIDR] = true
	}
	p.limiter.Forget(func(k string) bool { return keys[k] })
}

func (st *state) closeIdle() {
	st.pool.closeAll()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, t := range st.transports {
		t.CloseIdleConnections()
	}
}

func (p *Proxy) state() *state { return p.st.Load() }

// transport returns the pooled transport for d's entry under st: one per
// entry, so keep-alive connections are only reused for the entry (and the
// address check) they were dialed for.
func (p *Proxy) transport(st *state, d *dest) *http.Transport {
	// Unlisted names (report mode) share the "-" transport, which pools
	// per host itself: no map entry per name an agent makes up.
	key := d.key()
	st.mu.Lock()
	defer st.mu.Unlock()
	if t := st.transports[key]; t != nil {
		return t
	}
	plan := dialPlan{isIP: d.auth.ip.IsValid(), allowPrivate: d.rng != nil || (d.entry != nil && d.entry.AllowPrivate)}
	timeout := st.pol.TimeoutFor(d.entry).D()
	t := &http.Transport{
		Proxy: nil, // never HTTP_PROXY from the environment
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			a, err := parseAuthority(addr, 0)
			if err != nil {
				return nil, err
			}
			pl := plan
			pl.host, pl.port = a.host, a.port
			dctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			c, ap, err := p.dial(dctx, st, pl)
			if err != nil {
				return nil, err
			}
			if rs := reqStateFrom(ctx); rs != nil {
				rs.upstream = ap
			}
			return c, nil
		},
		TLSClientConfig:        &tls.Config{RootCAs: st.rootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		DisableCompression:     true,
		MaxIdleConns:           512,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		WriteBufferSize:        copyBufSize,
		ReadBufferSize:         copyBufSize,
	}
	st.transports[key] = t
	return t
}

// CACertPEM returns the interception CA's certificate, for sandboxes to trust.
func (p *Proxy) CACertPEM() []byte { return p.ca.CertPEM() }

// Ready reports whether the proxy is serving.
func (p *Proxy) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return errors.New("proxy: closed")
	case p.serving == 0:
		return errors.New("proxy: no listener serving yet")
	}
	if err := p.budget.Err(); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

// ServeExplicit serves the explicit proxy (absolute-form HTTP and CONNECT)
// on ln.
func (p *Proxy) ServeExplicit(ln net.Listener) error {
	return p.serveHTTP(ln, http.HandlerFunc(p.serveExplicit))
}

// ServeTransparentHTTP serves redirected port-80 traffic, routed by Host.
func (p *Proxy) ServeTransparentHTTP(ln net.Listener) error {
	return p.serveHTTP(ln, http.HandlerFunc(p.serveTransparentHTTP))
}

// readHeaderTimeout bounds how long a client may take to send a request's
// header block.
const readHeaderTimeout = 30 * time.Second

// serveHTTP serves plain HTTP/1.1 on ln with h1's server, which costs less
// CPU per request than net/http's (see internal/h1).
func (p *Proxy) serveHTTP(ln net.Listener, h http.Handler) error {
	pol := p.state().pol
	srv := &h1.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       pol.Proxy.IdleTimeout.D(),
		MaxHeaderBytes:    int(pol.Proxy.MaxHeaderBytes),
		ErrorLog:          log.New(slogWriter{p.log}, "", 0),
		ConnContext:       connContext,
	}
	if !p.addServer(srv, ln) {
		return errors.New("proxy: closed")
	}
	defer p.doneServing()
	err := srv.Serve(ln)
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeTransparentTLS serves redirected port-443 traffic: routed by SNI,
// tunnelled without terminating TLS unless the entry sets tls_intercept.
func (p *Proxy) ServeTransparentTLS(ln net.Listener) error {
	if !p.addServer(nil, ln) {
		return errors.New("proxy: closed")
	}
	defer p.doneServing()
	var tempDelay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay)
				continue
			}
			return err
		}
		tempDelay = 0
		if !p.track(c) {
			c.Close()
			return nil
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.serveTransparentTLS(c)
		}()
	}
}

func (p *Proxy) addServer(srv *h1.Server, ln net.Listener) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if srv != nil {
		p.servers[srv] = struct{}{}
	}
	p.listeners[ln] = struct{}{}
	p.serving++
	return true
}

func (p *Proxy) doneServing() {
	p.mu.Lock()
	p.serving--
	p.mu.Unlock()
}

// track registers a connection Close must close, and makes Close wait
// until it is untracked; false when the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
	p.wg.Done()
}

// Close stops every listener, closes open tunnels and connections, and
// flushes the byte budgets.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for ln := range p.listeners {
		ln.Close()
	}
	servers := make([]*h1.Server, 0, len(p.servers))
	for s := range p.servers {
		servers = append(servers, s)
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	for _, s := range servers {
		s.Close()
	}
	p.inner.Close()
	p.wg.Wait()
	p.state().closeIdle()
	return p.budget.Close()
}

// slogWriter routes net/http's internal error log to the structured logger.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.l.Debug("http server", "msg_text", string(b))
	return len(b), nil
}

// bufPool adapts the copy-buffer pool to httputil.BufferPool.
type bufPool struct{ p *sync.Pool }

func (b bufPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b bufPool) Put(x []byte) { b.p.Put(&x) }

type ctxKey int

const (
	keyConn ctxKey = iota
	keyReq
)

// connContext remembers the accepted connection, for intercepted tunnels.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, keyConn, c)
}

// chanListener hands intercepted connections to the inner HTTP server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
}
