package escape

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/cagent-dev/cagent/dnsfilter"
	"github.com/cagent-dev/cagent/sandbox"
)

// services returns a factory for the data plane of one sandbox, pointed at
// the fake internet's DNS server (never the machine's resolver).
func (e *env) services(t *testing.T, onGateway func(sandbox.Gateway)) func(sandbox.Gateway) (*sandbox.Services, error) {
	return func(g sandbox.Gateway) (*sandbox.Services, error) {
		if onGateway != nil {
			onGateway(g)
		}
		log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
		d, err := dnsfilter.New(dnsfilter.Config{Policy: e.pol, Upstreams: []netip.AddrPort{e.inet.DNS},
			Gateway: g.Gateway, Agent: g.Agent, Logger: log})
		if err != nil {
			return nil, err
		}
		return &sandbox.Services{DNS: d}, nil
	}
}
