package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// LookupAddrsTTL is LookupAddrs that also says how long the answer may be
// kept: the smallest TTL of the answer records (0 when any is 0). The proxy
// caches answers for that long (capped by the policy's dns.cache_ttl) so
// that a CONNECT or a new upstream connection does not wait for the
// upstream DNS server every time. Failures carry no TTL.
func (r *Resolver) LookupAddrsTTL(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	fqdn := dns.Fqdn(strings.ToLower(host))
	type res struct {
		addrs []netip.Addr
		ttl   uint32
		err   error
	}
	ch := make(chan res, 2)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		go func(qt uint16) {
			m := new(dns.Msg)
			m.SetQuestion(fqdn, qt)
			m.RecursionDesired = true
			resp, err := r.Exchange(ctx, m)
			switch {
			case err != nil:
				ch <- res{err: err}
			case resp.Rcode == dns.RcodeNameError:
				ch <- res{err: fmt.Errorf("%w: %s", ErrNotFound, host)}
			case resp.Rcode != dns.RcodeSuccess:
				ch <- res{err: fmt.Errorf("resolve %s: %s", host, dns.RcodeToString[resp.Rcode])}
			default:
				ttl := ^uint32(0)
				for _, rr := range resp.Answer {
					ttl = min(ttl, rr.Header().Ttl)
				}
				ch <- res{addrs: addrsFor(resp, fqdn, qt), ttl: ttl}
			}
		}(qt)
	}
	var v4, v6 []netip.Addr
	var errs []error
	ttl := ^uint32(0)
	for range 2 {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		for _, a := range r.addrs {
			if a.Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
		if len(r.addrs) > 0 {
			ttl = min(ttl, r.ttl)
		}
	}
	if len(v4)+len(v6) > 0 {
		// IPv4 first, as LookupAddrs. A failed half (say AAAA timed out)
		// is not cached: the answer may be incomplete.
		if len(errs) > 0 {
			ttl = 0
		}
		return append(v4, v6...), time.Duration(ttl) * time.Second, nil
	}
	if len(errs) > 0 {
		for _, e := range errs {
			if !errors.Is(e, ErrNotFound) {
				return nil, 0, errors.Join(errs...)
			}
		}
		return nil, 0, errs[0]
	}
	return nil, 0, fmt.Errorf("%w: %s has no address", ErrNotFound, host)
}
