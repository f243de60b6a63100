package dnsfilter

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/resolver"
)

var testGateway = netip.MustParseAddr("10.209.0.1")

// upstream is a test DNS server on 127.0.0.1 (UDP and TCP, random port)
// serving a small fixed zone. It counts the queries it receives.
type upstream struct {
	addr    netip.AddrPort
	queries atomic.Int32
	mu      sync.Mutex
	seen    []string // "name type" of each query
	options int      // EDNS0 options received, over all queries
}

func (u *upstream) asked() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return r
}

// zone answers like a recursive resolver would: CNAME chains come with the
// target's records.
func zone(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	add := func(recs ...string) {
		for _, s := range recs {
			x := rr(s)
			if x.Header().Rrtype == q.Qtype || x.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, x)
			}
		}
	}
	switch {
	case name == "allowed.test.":
		add("allowed.test. 3600 IN A 93.184.216.34", "allowed.test. 3600 IN AAAA 2606:2800:220:1::1")
	case name == "short.test.":
		add("short.test. 5 IN A 93.184.216.40")
	case name == "private.test.":
		add("private.test. 60 IN A 10.0.0.5")
	case name == "mixed.test.":
		add("mixed.test. 60 IN A 93.184.216.34", "mixed.test. 60 IN A 127.0.0.1", "mixed.test. 60 IN A 169.254.169.254")
	case name == "cname-bad.test.":
		add("cname-bad.test. 60 IN CNAME evil.test.", "evil.test. 60 IN A 93.184.216.35")
	case name == "cname-ok.test.":
		add("cname-ok.test. 60 IN CNAME allowed.test.", "allowed.test. 60 IN A 93.184.216.34")
	case name == "many.test.":
		for i := 0; i < 100; i++ {
			add(fmt.Sprintf("many.test. 60 IN A 93.184.%d.%d", i/250, i%250+1))
		}
	case name == "loop.test.":
		add("loop.test. 60 IN CNAME loop2.test.", "loop2.test. 60 IN CNAME loop.test.")
	case name == "extra.test.":
		// A poisoning attempt: records for names nobody asked about.
		add("extra.test. 60 IN A 93.184.216.37", "evil.test. 60 IN A 6.6.6.6", "allowed.test. 60 IN A 6.6.6.7")
	case name == "evil.test.":
		add("evil.test. 60 IN A 93.184.216.35")
	case strings.HasSuffix(name, ".wild.test.") || strings.HasSuffix(name, ".other.test."):
		add(q.Name + " 300 IN A 93.184.216.36")
	case name == "txt.test.":
		add(`txt.test. 60 IN TXT "hello"`)
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, rr("test. 60 IN SOA ns.test. host.test. 1 3600 600 86400 30"))
	}
	return m
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{}
	// UDP and TCP on the same random port; retry when the TCP port is taken.
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if i == 20 {
			t.Fatal(err)
		}
	}
	u.addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		u.mu.Lock()
		u.seen = append(u.seen, strings.ToLower(r.Question[0].Name)+" "+dns.TypeToString[r.Question[0].Qtype])
		if opt := r.IsEdns0(); opt != nil {
			u.options += len(opt.Option)
		}
		u.mu.Unlock()
		_ = w.WriteMsg(zone(r))
	})
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	var started sync.WaitGroup
	for _, s := range servers {
		started.Add(1)
		s.NotifyStartedFunc = started.Done
		go func() { _ = s.ActivateAndServe() }()
	}
	started.Wait()
	t.Cleanup(func() {
		for _, s := range servers {
			_ = s.Shutdown()
		}
	})
	return u
}

// events is an audit sink that keeps events in memory.
type events struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (e *events) Emit(ev *audit.Event) {
	e.mu.Lock()
	e.evs = append(e.evs, *ev)
	e.mu.Unlock()
}

func (e *events) all() []audit.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]audit.Event(nil), e.evs...)
}

func (e *events) last(t *testing.T) audit.Event {
	t.Helper()
	// The event is emitted before the reply is sent, but be tolerant anyway.
	for i := 0; i < 100; i++ {
		if evs := e.all(); len(evs) > 0 {
			return evs[len(evs)-1]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no audit event")
	return audit.Event{}
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustPolicy(t testing.TB, yaml string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	return p
}

// harness is a filter serving UDP and TCP on 127.0.0.1.
type harness struct {
	f      *Filter
	udp    string
	tcp    string
	ev     *events
	clock  *clock
	up     *upstream
	reg    *prometheus.Registry
	served chan error
}

type opt func(*Config)

func startFilter(t *testing.T, yaml string, opts ...opt) *harness {
	t.Helper()
	h := &harness{ev: &events{}, clock: newClock(), reg: prometheus.NewRegistry()}
	h.up = startUpstream(t)
	cfg := Config{
		Policy:          mustPolicy(t, yaml),
		Upstreams:       []netip.AddrPort{h.up.addr},
		Gateway:         testGateway,
		Audit:           h.ev,
		Agent:           "agent-1",
		Metrics:         h.reg,
		Clock:           h.clock.Now,
		ResolvConf:      "/nonexistent",                             // never the host's resolver
		ResolverOptions: resolver.Options{Timeout: 2 * time.Second}, // generous: the machine is shared
	}
	for _, o := range opts {
		o(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.f = f
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.udp, h.tcp = pc.LocalAddr().String(), ln.Addr().String()
	h.served = make(chan error, 2)
	go func() { h.served <- f.ServeUDP(pc) }()
	go func() { h.served <- f.ServeTCP(ln) }()
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
		for range 2 {
			if err := <-h.served; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return h
}

// ask sends one query over proto ("udp" or "tcp"), with EDNS0.
func (h *harness) ask(t *testing.T, proto, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	return h.send(t, proto, m)
}

func (h *harness) send(t *testing.T, proto string, m *dns.Msg) *dns.Msg {
	t.Helper()
	addr := h.udp
	if proto == "tcp" {
		addr = h.tcp
	}
	c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %v: %v", proto, m.Question, err)
	}
	return r
}

// ede returns the Extended DNS Error of r, if any.
func ede(r *dns.Msg) *dns.EDNS0_EDE {
	opt := r.IsEdns0()
	if opt == nil {
		return nil
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			return e
		}
	}
	return nil
}

func answers(r *dns.Msg) []string {
	var out []string
	for _, a := range r.Answer {
		out = append(out, rrString(a))
	}
	return out
}

// metric returns the value of the counter or gauge name whose label lname is lval.
func (h *harness) metric(t *testing.T, name, lname, lval string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if lname == "" || l.GetName() == lname && l.GetValue() == lval {
					if m.Counter != nil {
						return m.Counter.GetValue()
					}
					return m.Gauge.GetValue()
				}
			}
			if lname == "" && m.Gauge != nil {
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("metric %s{%s=%q} not found", name, lname, lval)
	return 0
}
