package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/dnsfilter"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/proxy"
	"github.com/cagent-dev/cagent/sandbox"
)

// stack is one incarnation of the sandbox with the proxy and DNS filter
// serving its gateway. The sandbox's network lives and dies with it; the
// services can be restarted alone.
type stack struct {
	d    *Daemon
	long *sandbox.Long
	gw   netip.Addr
	// sandboxCfg is the sandbox section the sandbox was created with; a
	// reload that changes it applies at the next start.
	sandboxCfg policy.Sandbox

	mu     sync.Mutex
	svc    map[string]*service
	closed bool // set by close; a restart racing with it must not add services
}

// service is a running proxy or DNS filter and its serve loops.
type service struct {
	name   string
	closer func() error
	ready  func() error
	setPol func(*policy.Policy)
	// refused, if set, says why the service runs an older policy than p.
	refused func(p *policy.Policy) error
	failed  chan error // first unexpected serve error
	since   time.Time
	wg      sync.WaitGroup
	lns     []func() error
	addrs   []string
}

func (s *service) fail(err error) {
	select {
	case s.failed <- err:
	default:
	}
}

func (s *service) stop() {
	_ = s.closer()
	for _, c := range s.lns {
		_ = c()
	}
	s.wg.Wait()
}

func (d *Daemon) newStack(ctx context.Context, p *policy.Policy) (*stack, error) {
	st := &stack{d: d, svc: map[string]*service{}, sandboxCfg: p.Sandbox}
	if err := ensureWorkspace(p.Sandbox.Workspace, p.Sandbox.User); err != nil {
		return nil, err
	}
	// The proxy comes first: its CA must be in the sandbox's trust store.
	px, err := d.newProxy(p)
	if err != nil {
		return nil, err
	}
	long, err := sandbox.CreateLong(ctx, sandbox.LongConfig{
		Config: sandbox.Config{
			Policy: p, Runtime: d.cfg.Runtime, StateDir: d.cfg.StateDir, Agent: d.cfg.Agent,
			Logger: d.log, Audit: d.sink, Now: d.cfg.Now,
		},
		CACertPEM: px.CACertPEM(),
		TrustCA:   true,
	})
	if err != nil {
		px.Close()
		return nil, err
	}
	st.long = long
	st.gw, err = netip.ParseAddr(long.Gateway())
	if err != nil {
		px.Close()
		long.Close()
		return nil, err
	}
	if err := st.startProxy(px); err != nil {
		st.close()
		return nil, err
	}
	if err := st.startDNS(p); err != nil {
		st.close()
		return nil, err
	}
	return st, nil
}

func (d *Daemon) newProxy(p *policy.Policy) (*proxy.Proxy, error) {
	return proxy.New(proxy.Config{
		Policy: p, StateDir: d.cfg.StateDir, Audit: d.traffic, Logger: d.log, Agent: d.cfg.Agent,
		Upstreams: d.cfg.Upstreams, RootCAs: d.cfg.RootCAs, Secrets: d.secretSource(),
		Clock: d.cfg.Now, LookupEnv: d.cfg.LookupEnv,
	})
}

func (st *stack) listen(s *service, port int, serve func(net.Listener) error) error {
	ln, err := net.Listen("tcp4", netip.AddrPortFrom(st.gw, uint16(port)).String())
	if err != nil {
		return fmt.Errorf("%s: listen: %w", s.name, err)
	}
	s.lns = append(s.lns, ln.Close)
	s.addrs = append(s.addrs, "tcp/"+strconv.Itoa(port))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := serve(ln)
		if err == nil || errors.Is(err, net.ErrClosed) {
			err = fmt.Errorf("%s listener on port %d stopped", s.name, port)
		}
		s.fail(err)
	}()
	return nil
}

func (st *stack) startProxy(px *proxy.Proxy) (err error) {
	s := &service{name: "proxy", closer: px.Close, ready: px.Ready, setPol: px.SetPolicy, failed: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	for _, l := range []struct {
		port  int
		serve func(net.Listener) error
	}{{sandbox.PortExplicit, px.ServeExplicit}, {sandbox.PortHTTP, px.ServeTransparentHTTP}, {sandbox.PortHTTPS, px.ServeTransparentTLS}} {
		if err := st.listen(s, l.port, l.serve); err != nil {
			return err
		}
	}
	return st.add(s)
}

// add records a started service, unless the stack was closed meanwhile.
func (st *stack) add(s *service) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		go s.stop()
		return errors.New("sandbox stopped")
	}
	s.since = time.Now()
	st.svc[s.name] = s
	return nil
}

func (st *stack) startDNS(p *policy.Policy) (err error) {
	d := st.d
	f, err := dnsfilter.New(dnsfilter.Config{
		Policy: p, Upstreams: d.cfg.Upstreams, Gateway: st.gw, Audit: d.traffic, Logger: d.log,
		Agent: d.cfg.Agent, Clock: d.cfg.Now,
	})
	if err != nil {
		return err
	}
	s := &service{name: "dns", closer: f.Close, ready: func() error { return nil }, setPol: f.SetPolicy, failed: make(chan error, 1),
		refused: func(p *policy.Policy) error {
			if f.Policy() == p {
				return nil
			}
			// A policy the filter accepts is about to be applied (the
			// watcher stores it, then applies it).
			return f.CheckPolicy(p)
		}}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if err := st.listen(s, sandbox.PortDNS, f.ServeTCP); err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(st.gw, sandbox.PortDNS).String())
	if err != nil {
		return fmt.Errorf("dns: listen: %w", err)
	}
	s.lns = append(s.lns, pc.Close)
	s.addrs = append(s.addrs, "udp/53")
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := f.ServeUDP(pc)
		if err == nil || errors.Is(err, net.ErrClosed) {
			err = errors.New("dns listener on udp/53 stopped")
		}
		s.fail(err)
	}()
	return st.add(s)
}

// check reports a service's health: its serve loops run and it is ready.
func (st *stack) check(name string) error {
	st.mu.Lock()
	s := st.svc[name]
	st.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%s is not running", name)
	}
	select {
	case err := <-s.failed:
		s.fail(err) // keep it failed until restarted
		return err
	default:
	}
	// Serve loops register with the server a moment after they start.
	if time.Since(s.since) < readyGrace {
		return nil
	}
	return s.ready()
}

// readyGrace is how long a new service may report "not serving yet".
const readyGrace = 2 * time.Second

// refusal reports why a service does not run policy p, or nil.
func (st *stack) refusal(name string, p *policy.Policy) error {
	st.mu.Lock()
	s := st.svc[name]
	st.mu.Unlock()
	if s == nil || s.refused == nil {
		return nil
	}
	return s.refused(p)
}

// restart replaces a crashed service with a fresh one on the same gateway.
func (st *stack) restart(name string, p *policy.Policy) error {
	st.mu.Lock()
	old := st.svc[name]
	delete(st.svc, name)
	st.mu.Unlock()
	if old != nil {
		old.stop()
	}
	switch name {
	case "proxy":
		px, err := st.d.newProxy(p)
		if err != nil {
			return err
		}
		return st.startProxy(px)
	case "dns":
		return st.startDNS(p)
	}
	return fmt.Errorf("unknown component %s", name)
}

func (st *stack) setPolicy(p *policy.Policy) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, s := range st.svc {
		s.setPol(p)
	}
}

func (st *stack) info() map[string]string {
	return map[string]string{
		"id": st.long.ID(), "runtime": st.long.Runtime(),
		"address": st.long.Addr(), "gateway": st.long.Gateway(),
	}
}

func (st *stack) serviceInfo(name string) map[string]string {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.svc[name]
	if s == nil {
		return nil
	}
	m := map[string]string{"listen": st.gw.String()}
	for i, a := range s.addrs {
		m["port"+strconv.Itoa(i+1)] = a
	}
	return m
}

// close stops the services, then the sandbox (whose network they use).
func (st *stack) close() {
	st.mu.Lock()
	svcs := st.svc
	st.svc = map[string]*service{}
	st.closed = true
	st.mu.Unlock()
	for _, s := range svcs {
		s.stop()
	}
	if st.long != nil {
		_ = st.long.Close()
	}
}

// ensureWorkspace creates a missing workspace directory, owned by the
// sandbox user, so that `cagent up` works on a fresh checkout. (`cagent
// run` refuses a missing one instead: there a typo should not go unnoticed.)
func ensureWorkspace(dir, user string) error {
	if dir == "" {
		return nil
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create workspace: %w", err)
	}
	u, g, _ := strings.Cut(user, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if g == "" {
		gid, err2 = uid, err1
	}
	if err1 != nil || err2 != nil {
		return nil // the sandbox validates the user and reports it
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("create workspace: %w", err)
	}
	return nil
}
