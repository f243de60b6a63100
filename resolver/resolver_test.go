package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer serves a fixed zone on 127.0.0.1 over UDP and TCP.
type testServer struct {
	addr    netip.AddrPort
	queries atomic.Int32
}

func startServer(t *testing.T, handler dns.HandlerFunc) *testServer {
	t.Helper()
	ts := &testServer{}
	// UDP and TCP must share a port; another process may hold the TCP side
	// of the port the kernel picked for UDP, so try a few.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for try := 0; try < 20; try++ {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		ts.queries.Add(1)
		handler(w, r)
	})
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return ts
}

func zone(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	switch q.Name {
	case "a.test.":
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, mustRR("a.test. 60 IN A 10.210.0.5"))
		}
		if q.Qtype == dns.TypeAAAA {
			m.Answer = append(m.Answer, mustRR("a.test. 60 IN AAAA fd00::5"))
		}
	case "alias.test.":
		m.Answer = append(m.Answer, mustRR("alias.test. 60 IN CNAME a.test."))
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, mustRR("a.test. 60 IN A 10.210.0.5"))
		}
	case "other.test.":
		// An address record for a name outside the CNAME chain must be ignored.
		m.Answer = append(m.Answer, mustRR("unrelated.test. 60 IN A 10.210.0.9"))
	case "big.test.":
		if _, isTCP := w.RemoteAddr().(*net.TCPAddr); !isTCP {
			m.Truncated = true
		} else if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, mustRR("big.test. 60 IN A 10.210.0.7"))
		}
	default:
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

func TestLookupAddrs(t *testing.T) {
	srv := startServer(t, zone)
	r := New([]netip.AddrPort{srv.addr}, Options{Timeout: time.Second})
	ctx := context.Background()
	tests := []struct {
		host    string
		want    []string
		notFind bool
	}{
		{host: "a.test", want: []string{"10.210.0.5", "fd00::5"}},
		{host: "A.TEST.", want: []string{"10.210.0.5", "fd00::5"}},
		{host: "alias.test", want: []string{"10.210.0.5"}},
		{host: "big.test", want: []string{"10.210.0.7"}},
		{host: "other.test", notFind: true},
		{host: "missing.test", notFind: true},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got, err := r.LookupAddrs(ctx, tt.host)
			if tt.notFind {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("want ErrNotFound, got %v %v", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].String() != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestFailover(t *testing.T) {
	// A UDP port with nothing listening: loopback answers with ICMP unreachable at once.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := netip.MustParseAddrPort(dead.LocalAddr().String())
	dead.Close()
	srv := startServer(t, zone)
	r := New([]netip.AddrPort{deadAddr, srv.addr}, Options{Timeout: 500 * time.Millisecond})
	for i := 0; i < 3; i++ {
		got, err := r.LookupAddrs(context.Background(), "a.test")
		if err != nil || len(got) == 0 {
			t.Fatalf("lookup %d: %v %v", i, got, err)
		}
	}
	if r.good.Load() != 1 {
		t.Fatalf("the working upstream should be remembered, good=%d", r.good.Load())
	}
}

func TestServfailMovesOn(t *testing.T) {
	bad := startServer(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	good := startServer(t, zone)
	r := New([]netip.AddrPort{bad.addr, good.addr}, Options{})
	if _, err := r.LookupAddrs(context.Background(), "a.test"); err != nil {
		t.Fatal(err)
	}
	// Only SERVFAIL everywhere: the SERVFAIL answer is returned, not an error.
	r2 := New([]netip.AddrPort{bad.addr}, Options{})
	m := new(dns.Msg)
	m.SetQuestion("a.test.", dns.TypeA)
	resp, err := r2.Exchange(context.Background(), m)
	if err != nil || resp.Rcode != dns.RcodeServerFailure {
		t.Fatalf("got %v %v", resp, err)
	}
}

func TestSpoofedReplyIgnored(t *testing.T) {
	// The server first sends a reply with the wrong ID, then the right one.
	srv := startServer(t, func(w dns.ResponseWriter, r *dns.Msg) {
		fake := new(dns.Msg)
		fake.SetReply(r)
		fake.Id = r.Id + 1
		fake.Answer = append(fake.Answer, mustRR(r.Question[0].Name+" 60 IN A 169.254.169.254"))
		w.WriteMsg(fake)
		zone(w, r)
	})
	r := New([]netip.AddrPort{srv.addr}, Options{})
	got, err := r.LookupAddrs(context.Background(), "a.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range got {
		if a.String() == "169.254.169.254" {
			t.Fatal("accepted a reply with the wrong ID")
		}
	}
}

func TestNoUpstreams(t *testing.T) {
	if _, err := New(nil, Options{}).LookupAddrs(context.Background(), "a.test"); err == nil {
		t.Fatal("want an error without upstreams")
	}
}

func TestFromResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\nsearch example\nnameserver 10.210.0.1\nnameserver ::1\nnameserver bogus\noptions ndots:1\n"), 0o644)
	got, err := FromResolvConf(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "10.210.0.1:53" || got[1].String() != "[::1]:53" {
		t.Fatalf("got %v", got)
	}
	os.WriteFile(p, []byte("search x\n"), 0o644)
	if _, err := FromResolvConf(p); err == nil {
		t.Fatal("want an error for a file without nameservers")
	}
}
