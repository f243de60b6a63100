package dnsfilter

import (
	"github.com/cagent-dev/cagent/audit"
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
	fs, err := audit.OpenFile(filepath.Join(b.TempDir(), "dns.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()
	sink := audit.NewQueue(fs, nil)
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

// BenchmarkFastPath measures a repeated query answered from a template.
func BenchmarkFastPath(b *testing.B) {
	up := startUpstream(b)
	p := mustPolicy(b, `
dns:
  answer: upstream
  rate_limit: {requests_per_minute: 1000000000, burst_size: 1000000}
domains:
  - domain: allowed.test
`)
	fs, err := audit.OpenFile(filepath.Join(b.TempDir(), "dns.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()
	sink := audit.NewQueue(fs, nil)
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
	f.handle(client, "udp", wire)
	f.handle(client, "udp", wire) // a cache hit: makes the template
	key := make([]byte, 0, 260)
	out := make([]byte, 0, 512)
	if f.fast(client, "127.0.0.1", wire, key, out) == nil {
		b.Fatal("no template")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.fast(client, "127.0.0.1", wire, key, out)
	}
}
