package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/cagent-dev/cagent/netclass"
	"github.com/cagent-dev/cagent/resolver"
)

// forbiddenError is a destination that resolved to a forbidden address.
type forbiddenError struct {
	host  string
	addr  netip.Addr
	class netclass.Class
}

func (e *forbiddenError) Error() string {
	return fmt.Sprintf("%s resolves to %s, a %s address", e.host, e.addr, e.class)
}

// resolveError is a name that did not resolve.
type resolveError struct {
	host string
	err  error
}

func (e *resolveError) Error() string { return fmt.Sprintf("resolve %s: %v", e.host, e.err) }
func (e *resolveError) Unwrap() error { return e.err }

// dialPlan is the one resolution-and-check a dial is based on.
type dialPlan struct {
	host         string
	port         int
	isIP         bool
	allowPrivate bool // the entry's allow_private, or an ip_ranges match
}

// checkAddrs refuses the whole answer when any address is forbidden: a
// mixed answer is a rebinding attempt, not a reason to pick the good one.
func checkAddrs(host string, addrs []netip.Addr, allowPrivate bool) error {
	for _, a := range addrs {
		c := netclass.Of(a)
		if c == netclass.Public {
			continue
		}
		if c == netclass.Metadata || !allowPrivate {
			return &forbiddenError{host: host, addr: a, class: c}
		}
	}
	return nil
}

// dial resolves plan.host once, checks every address, and connects to
// exactly those checked addresses (no second lookup, so a DNS answer that
// changes after the check cannot redirect the connection). It returns the
// connection and the address dialed.
func (p *Proxy) dial(ctx context.Context, st *state, plan dialPlan) (net.Conn, netip.AddrPort, error) {
	var addrs []netip.Addr
	if plan.isIP {
		a, err := netip.ParseAddr(plan.host)
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		addrs = []netip.Addr{a.Unmap()}
	} else {
		var err error
		addrs, err = st.dns.lookup(ctx, plan.host)
		if err != nil {
			if st.upstreamProxy != nil && !errors.Is(err, resolver.ErrNotFound) {
				// Behind a corporate proxy our DNS may not see public names;
				// the upstream proxy resolves them.
				return p.dialViaProxy(ctx, st, net.JoinHostPort(plan.host, strconv.Itoa(plan.port)))
			}
			return nil, netip.AddrPort{}, &resolveError{host: plan.host, err: err}
		}
	}
	if err := checkAddrs(plan.host, addrs, plan.allowPrivate); err != nil {
		return nil, netip.AddrPort{}, err
	}
	if st.upstreamProxy != nil {
		// CONNECT by name so the corporate proxy's own name rules apply; the
		// addresses were still checked above.
		hp := net.JoinHostPort(plan.host, strconv.Itoa(plan.port))
		if plan.isIP {
			hp = netip.AddrPortFrom(addrs[0], uint16(plan.port)).String()
		}
		return p.dialViaProxy(ctx, st, hp)
	}
	var errs []error
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(plan.port))
		c, err := p.dialContext(ctx, "tcp", ap.String())
		if err == nil {
			return c, ap, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, netip.AddrPort{}, errors.Join(errs...)
}

// dialViaProxy opens a CONNECT tunnel to hostport through proxy.upstream_proxy.
func (p *Proxy) dialViaProxy(ctx context.Context, st *state, hostport string) (net.Conn, netip.AddrPort, error) {
	u := st.upstreamProxy
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	proxyAddr := net.JoinHostPort(u.Hostname(), port)
	if _, err := netip.ParseAddr(u.Hostname()); err != nil {
		addrs, err := st.dns.lookup(ctx, u.Hostname())
		if err != nil {
			return nil, netip.AddrPort{}, fmt.Errorf("upstream proxy: %w", err)
		}
		proxyAddr = net.JoinHostPort(addrs[0].String(), port)
	}
	c, err := p.dialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("upstream proxy: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Opaque: hostport}, Host: hostport, Header: http.Header{}}
	if u.User != nil {
		pw, _ := u.User.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, netip.AddrPort{}, fmt.Errorf("upstream proxy: %w", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, netip.AddrPort{}, fmt.Errorf("upstream proxy: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, netip.AddrPort{}, fmt.Errorf("upstream proxy refused CONNECT %s: %s", hostport, resp.Status)
	}
	c.SetDeadline(time.Time{})
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	if br.Buffered() > 0 {
		return &prefixConn{Conn: c, r: io.MultiReader(io.LimitReader(br, int64(br.Buffered())), c)}, ap, nil
	}
	return c, ap, nil
}

func (p *Proxy) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.cfg.DialContext != nil {
		return p.cfg.DialContext(ctx, network, addr)
	}
	return p.dialer.DialContext(ctx, network, addr)
}

// prefixConn replays bytes already read from a connection before reading on.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }
