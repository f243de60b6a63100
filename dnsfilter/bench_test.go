package dnsfilter

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkHandleCached measures one cached query through the handler, with
// the audit event written to a hash-chained file as in production.
func BenchmarkHandleCached(b *testing.B) {
	up := startUpstream(b)
	p := mustPolicy(b, `
dns:
  answer: upstream
  rate_limit: {requests_per_minute: 1000000000, burst_size: 1000000}
domains:
  - domain: allowed.test
`)
	sink, err := openBatchFile(filepath.Join(b.TempDir(), "dns.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	f, err := New(Config{Policy: p, Upstreams: []netip.AddrPort{up.addr}, Audit: sink})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	m := new(dns.Msg)
	m.SetQuestion("allowed.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	wire, _ := m.Pack()
	client := netip.MustParseAddr("127.0.0.1")
	if out := f.handle(client, "udp", wire); out == nil {
		b.Fatal("no reply")
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.handle(client, "udp", wire)
		}
	})
}
