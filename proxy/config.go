// Package proxy is Cagent's egress proxy: every byte an agent sends out goes
// through it. It serves an explicit proxy (absolute-form HTTP and CONNECT)
// and the transparent listeners of the sandbox topology (HTTP routed by Host,
// TLS routed by SNI), and enforces the policy on each request and tunnel:
// host allowlist, forbidden address classes, methods, paths, rate limits,
// egress byte budgets, credential injection and TLS interception.
package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/credential"
	"github.com/cagent-dev/cagent/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Proxy.
type Config struct {
	Policy    *policy.Policy // required; SetPolicy swaps it atomically for new requests
	StateDir  string         // CA and byte-budget counters live here
	Audit     audit.Sink     // one event per request or tunnel
	Logger    *slog.Logger
	Agent     string                  // agent name put in events
	Upstreams []netip.AddrPort        // DNS servers for upstream names; nil: policy dns.upstream, else /etc/resolv.conf
	RootCAs   *x509.CertPool          // upstream TLS roots; nil: policy proxy.ca_bundle, else system roots
	Secrets   credential.SecretSource // for secret: credentials; may be nil
	Metrics   prometheus.Registerer   // nil: a private registry
	Clock     func() time.Time
	// DialContext dials upstreams (and the upstream proxy); nil: a net.Dialer.
	// The proxy always passes an IP:port it has already checked.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// LookupEnv reads env: credentials; nil: os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ResolvConf is the file read when neither Upstreams nor the policy name
	// DNS servers; "" means /etc/resolv.conf.
	ResolvConf string
}

// Validate reports a missing or inconsistent setting.
func (c *Config) Validate() error {
	var errs []error
	if c.Policy == nil {
		errs = append(errs, errors.New("proxy: Config.Policy is required"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("proxy: Config.StateDir is required (the CA and byte budgets live there)"))
	}
	for _, u := range c.Upstreams {
		if !u.IsValid() || u.Port() == 0 {
			errs = append(errs, errors.New("proxy: Config.Upstreams holds an invalid address"))
			break
		}
	}
	return errors.Join(errs...)
}
