package escape

import (
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cagent-dev/cagent/dnsfilter"
	"github.com/cagent-dev/cagent/proxy"
	"github.com/cagent-dev/cagent/sandbox"
)

// services returns a factory for the data plane of one sandbox, pointed at
// the fake internet's DNS server (never the machine's resolver) and trusting
// the fake internet's CA for upstream TLS.
func (e *env) services(t *testing.T, onGateway func(sandbox.Gateway)) func(sandbox.Gateway) (*sandbox.Services, error) {
	return func(g sandbox.Gateway) (*sandbox.Services, error) {
		if onGateway != nil {
			onGateway(g)
		}
		log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
		up := []netip.AddrPort{e.inet.DNS}
		// One proxy state directory per concurrent sandbox: a proxy locks
		// its byte-budget file.
		p, err := proxy.New(proxy.Config{Policy: e.pol, StateDir: filepath.Join(e.state, "proxy", g.ID), Logger: log,
			Agent: g.Agent, Upstreams: up, RootCAs: e.inet.CAPool})
		if err != nil {
			return nil, err
		}
		d, err := dnsfilter.New(dnsfilter.Config{Policy: e.pol, Upstreams: up,
			Gateway: g.Gateway, Agent: g.Agent, Logger: log})
		if err != nil {
			return nil, errors.Join(err, p.Close())
		}
		return &sandbox.Services{Proxy: p, DNS: d}, nil
	}
}
