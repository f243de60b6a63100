package dnsfilter

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"

	"github.com/cagent-dev/cagent/audit"
)

// BenchmarkHandleCached measures one cached query through the handler, with
// the audit event written to a hash-chained file as in production.
func BenchmarkHandleCached(b *testing.B) {
	f := benchFilter(b, `
domains:
  - domain: allowed.test
`)
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
	f := benchFilter(b, `
domains:
  - domain: allowed.test
`)
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

// BenchmarkHandleMiss measures one query for a name never asked before: the
// full path, an upstream exchange over loopback, a cache insert (the cache
// full and evicting after the first DefaultCacheSize names) and the audit
// event. Its allocations are what the garbage collector has to keep up with
// under a flood of distinct names.
func BenchmarkHandleMiss(b *testing.B) {
	f := benchFilter(b, `
  tunneling: {distinct_names_per_hour: -1}
domains:
  - domain: "*.allowed.test"
`)
	client := netip.MustParseAddr("127.0.0.1")
	wires := make([][]byte, b.N)
	for i := range wires {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("u%d.allowed.test.", i), dns.TypeA)
		m.SetEdns0(1232, false)
		wires[i], _ = m.Pack()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if f.handle(client, "udp", wires[i]) == nil {
			b.Fatal("no reply")
		}
	}
}

// BenchmarkServeUDPCached measures a cached query end to end over loopback
// UDP, one at a time as a lightly loaded server sees them: the batch reader,
// the fast path, the reply and the audit writer. Its allocations per query
// are what makes the garbage collector run while a server only answers from
// its cache.
func BenchmarkServeUDPCached(b *testing.B) {
	f := benchFilter(b, `
domains:
  - domain: allowed.test
`)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go f.ServeUDP(pc)
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion("allowed.test.", dns.TypeA)
	wire, _ := m.Pack()
	buf := make([]byte, 512)
	ask := func() {
		if _, err := c.Write(wire); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	for range 3 { // miss, cache hit (makes the template), fast path
		ask()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ask()
	}
}

// benchFilter starts a filter for benchmarks, in upstream answer mode with
// no rate limit, forwarding to a test upstream and writing its audit events
// to a hash-chained file as in production; extra is YAML added under dns:
// (indented) and after it.
func benchFilter(b *testing.B, extra string) *Filter {
	b.Helper()
	up := startUpstream(b)
	p := mustPolicy(b, "dns:\n  answer: upstream\n  rate_limit: {requests_per_minute: 1000000000, burst_size: 1000000}\n"+extra)
	fs, err := audit.OpenFile(filepath.Join(b.TempDir(), "dns.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	sink := audit.NewQueue(fs, nil)
	f, err := New(Config{Policy: p, Upstreams: []netip.AddrPort{up.addr}, Audit: sink})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		f.Close()
		sink.Close()
		fs.Close()
	})
	return f
}
