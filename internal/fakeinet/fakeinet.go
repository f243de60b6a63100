// Package fakeinet builds the test suite's fake internet (design.md section
// 8): a network namespace joined to the host by a veth on 10.210.X.0/24, with
// HTTP and HTTPS echo servers (certificates from a test CA made per run), a
// DNS server for *.test names, and a "catcher" that records every TCP
// connection and UDP datagram it receives, so a test can prove that an escape
// attempt never arrived.
//
// The namespace has no default route and the host never forwards: only the
// host (where the data plane under test runs) can reach it.
package fakeinet

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"github.com/miekg/dns"
)

// CatcherPorts are the ports the catcher listens on (TCP and UDP) at the
// Catcher address.
var CatcherPorts = []int{22, 53, 80, 443, 3128, 7777}

// Options configure Start.
type Options struct {
	// Records adds DNS A records (name -> address), e.g. a name that
	// resolves to 127.0.0.1 or 169.254.169.254. Names are case-insensitive;
	// "*.zone" answers every name below zone.
	Records map[string][]netip.Addr
}

// Internet is a running fake internet.
type Internet struct {
	NS       string     // namespace name
	HostAddr netip.Addr // the host's end of the veth (10.210.X.1)
	Web      netip.Addr // HTTP :80, HTTPS :443, DNS :53 (10.210.X.2)
	Catcher  netip.Addr // catcher (10.210.X.3)
	DNS      netip.AddrPort
	Subnet   netip.Prefix

	CACertPEM []byte
	CAPool    *x509.CertPool
	CAFile    string // PEM file holding the CA certificate

	mu       sync.Mutex
	records  map[string][]netip.Addr
	requests []Request
	caught   []Catch
	queries  []string

	cert    tls.Certificate
	closers []func()
}

// Request is what the echo servers saw (and echo back as JSON).
type Request struct {
	Method     string              `json:"method"`
	Host       string              `json:"host"`
	RequestURI string              `json:"request_uri"`
	Header     map[string][]string `json:"header"`
	Remote     string              `json:"remote"`
	TLS        bool                `json:"tls"`
	SNI        string              `json:"sni,omitempty"`
}

// Catch is one connection or datagram received by the catcher.
type Catch struct {
	Proto  string // tcp or udp
	Port   int
	Remote string
}

// Start builds a fake internet for t and removes it in t.Cleanup.
func Start(t testing.TB, opts Options) *Internet {
	t.Helper()
	testutil.RequireRoot(t)
	in, err := start(opts)
	if err != nil {
		t.Fatalf("fakeinet: %v", err)
	}
	t.Cleanup(in.Close)
	return in
}

// removeStale deletes fake internets whose test process is gone.
func removeStale() {
	names, _ := netsetup.List()
	for _, n := range names {
		var x, pid int
		if _, err := fmt.Sscanf(n, "cagent-inet-%d-%d", &x, &pid); err != nil || n != fmt.Sprintf("cagent-inet-%d-%d", x, pid) {
			continue
		}
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) {
			continue
		}
		// Only the namespace: its veth pair goes with it, and the host end's
		// name may by now belong to a live run.
		_ = netsetup.Delete(n)
	}
}

func start(opts Options) (*Internet, error) {
	removeStale()
	in := &Internet{records: map[string][]netip.Addr{}}
	var hostName string
	// Claim a /24 by creating the host veth named after it.
	var last error
	for range 64 {
		x := 1 + int(randUint(254))
		in.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 210, byte(x), 0}), 24)
		in.HostAddr = netip.AddrFrom4([4]byte{10, 210, byte(x), 1})
		in.Web = netip.AddrFrom4([4]byte{10, 210, byte(x), 2})
		in.Catcher = netip.AddrFrom4([4]byte{10, 210, byte(x), 3})
		// The creator's pid in the name lets a later run remove what a
		// killed test process (no t.Cleanup) left: see removeStale.
		in.NS = fmt.Sprintf("cagent-inet-%d-%d", x, os.Getpid())
		hostName = fmt.Sprintf("cgin%d", x)
		if err := netsetup.Create(in.NS); err != nil {
			if errors.Is(err, netsetup.ErrExists) {
				last = err
				continue
			}
			return nil, err
		}
		v := netsetup.Veth{HostName: hostName, PeerName: "eth0", NS: in.NS,
			HostAddr: netip.PrefixFrom(in.HostAddr, 24), PeerAddr: netip.PrefixFrom(in.Web, 24)}
		err := v.Add()
		if err == nil {
			err = v.WaitUp(2 * time.Second)
			if err != nil {
				_ = netsetup.DeleteLink(hostName)
				_ = netsetup.Delete(in.NS)
				return nil, err
			}
			break
		}
		_ = netsetup.Delete(in.NS)
		last = err
		if !errors.Is(err, netsetup.ErrExists) {
			return nil, err
		}
		hostName = ""
	}
	if hostName == "" {
		return nil, fmt.Errorf("no free 10.210.X.0/24: %w", last)
	}
	in.closers = append(in.closers, func() { _ = netsetup.DeleteLink(hostName); _ = netsetup.Delete(in.NS) })
	in.DNS = netip.AddrPortFrom(in.Web, 53)
	if err := netsetup.AddAddr(in.NS, "eth0", netip.PrefixFrom(in.Catcher, 24)); err != nil {
		in.Close()
		return nil, err
	}
	for _, n := range []string{"web.test", "api.test", "other.test", "alt.test"} {
		in.records[n] = []netip.Addr{in.Web}
	}
	in.records["catcher.test"] = []netip.Addr{in.Catcher}
	for n, a := range opts.Records {
		in.records[canon(n)] = a
	}
	if err := in.makeCA(); err != nil {
		in.Close()
		return nil, err
	}
	if err := in.serve(); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

func canon(n string) string { return strings.TrimSuffix(strings.ToLower(n), ".") }

func randUint(n uint64) uint64 {
	v, err := rand.Int(rand.Reader, new(big.Int).SetUint64(n))
	if err != nil {
		panic(err)
	}
	return v.Uint64()
}

// Close stops the servers and removes the namespace and veth.
func (in *Internet) Close() {
	for i := len(in.closers) - 1; i >= 0; i-- {
		in.closers[i]()
	}
	in.closers = nil
	if in.CAFile != "" {
		_ = os.RemoveAll(filepath.Dir(in.CAFile))
	}
}

func (in *Internet) makeCA() error {
	caKey, caCert, caDER, err := newCA()
	if err != nil {
		return err
	}
	in.CACertPEM = pemCert(caDER)
	in.CAPool = x509.NewCertPool()
	in.CAPool.AddCert(caCert)
	dir, err := os.MkdirTemp("", "fakeinet-ca-")
	if err != nil {
		return err
	}
	in.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(in.CAFile, in.CACertPEM, 0o644); err != nil {
		return err
	}
	names := []string{"*.test"}
	for n := range in.records {
		names = append(names, n)
	}
	sort.Strings(names)
	c, err := leaf(caKey, caCert, names, []netip.Addr{in.Web})
	if err != nil {
		return err
	}
	in.cert = c
	return nil
}

func (in *Internet) serve() error {
	cert := in.cert
	var (
		lnHTTP, lnHTTPS, lnDNS net.Listener
		pcDNS                  net.PacketConn
		catchTCP               []net.Listener
		catchUDP               []net.PacketConn
	)
	err := netsetup.Do(in.NS, func() error {
		var err error
		if lnHTTP, err = net.Listen("tcp4", netip.AddrPortFrom(in.Web, 80).String()); err != nil {
			return err
		}
		if lnHTTPS, err = net.Listen("tcp4", netip.AddrPortFrom(in.Web, 443).String()); err != nil {
			return err
		}
		if lnDNS, err = net.Listen("tcp4", in.DNS.String()); err != nil {
			return err
		}
		if pcDNS, err = net.ListenPacket("udp4", in.DNS.String()); err != nil {
			return err
		}
		for _, p := range CatcherPorts {
			l, err := net.Listen("tcp4", netip.AddrPortFrom(in.Catcher, uint16(p)).String())
			if err != nil {
				return err
			}
			catchTCP = append(catchTCP, l)
			pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(in.Catcher, uint16(p)).String())
			if err != nil {
				return err
			}
			catchUDP = append(catchUDP, pc)
		}
		return nil
	})
	closeAll := func() {
		for _, c := range []interface{ Close() error }{lnHTTP, lnHTTPS, lnDNS} {
			if c != nil && c != (net.Listener)(nil) {
				_ = c.Close()
			}
		}
		if pcDNS != nil {
			_ = pcDNS.Close()
		}
		for _, l := range catchTCP {
			_ = l.Close()
		}
		for _, p := range catchUDP {
			_ = p.Close()
		}
	}
	if err != nil {
		closeAll()
		return fmt.Errorf("listen in %s: %w", in.NS, err)
	}
	var wg sync.WaitGroup
	hs := &http.Server{Handler: http.HandlerFunc(in.echo), ReadHeaderTimeout: 10 * time.Second}
	hss := &http.Server{Handler: http.HandlerFunc(in.echo), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	wg.Add(2)
	go func() { defer wg.Done(); _ = hs.Serve(lnHTTP) }()
	go func() { defer wg.Done(); _ = hss.ServeTLS(lnHTTPS, "", "") }()

	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	du := &dns.Server{PacketConn: pcDNS, Handler: dns.HandlerFunc(in.answer), NotifyStartedFunc: notify}
	dt := &dns.Server{Listener: lnDNS, Handler: dns.HandlerFunc(in.answer), NotifyStartedFunc: notify}
	wg.Add(2)
	go func() { defer wg.Done(); _ = du.ActivateAndServe() }()
	go func() { defer wg.Done(); _ = dt.ActivateAndServe() }()
	<-started
	<-started

	for i, l := range catchTCP {
		port := CatcherPorts[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				in.record(Catch{Proto: "tcp", Port: port, Remote: c.RemoteAddr().String()})
				_, _ = c.Write([]byte("caught\n"))
				_ = c.Close()
			}
		}()
	}
	for i, pc := range catchUDP {
		port := CatcherPorts[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				in.record(Catch{Proto: "udp", Port: port, Remote: from.String()})
				_, _ = pc.WriteTo([]byte("caught\n"), from)
			}
		}()
	}
	in.closers = append(in.closers, func() {
		_ = hs.Close()
		_ = hss.Close()
		_ = du.Shutdown()
		_ = dt.Shutdown()
		closeAll()
		wg.Wait()
	})
	return nil
}

func (in *Internet) record(c Catch) {
	in.mu.Lock()
	in.caught = append(in.caught, c)
	in.mu.Unlock()
}

func (in *Internet) echo(w http.ResponseWriter, r *http.Request) {
	req := Request{Method: r.Method, Host: r.Host, RequestURI: r.RequestURI, Header: r.Header,
		Remote: r.RemoteAddr, TLS: r.TLS != nil}
	if r.TLS != nil {
		req.SNI = r.TLS.ServerName
	}
	in.mu.Lock()
	in.requests = append(in.requests, req)
	in.mu.Unlock()
	// Echo everything but credentials: the escape suite searches sandbox
	// output for the injected secret, which a real upstream would not echo.
	echo := req
	echo.Header = map[string][]string{}
	for k, v := range req.Header {
		if k == "Authorization" {
			v = []string{"<redacted by fakeinet; see Requests>"}
		}
		echo.Header[k] = v
	}
	req = echo
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(req)
}

func (in *Internet) answer(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	qq := q.Question[0]
	name := canon(qq.Name)
	in.mu.Lock()
	in.queries = append(in.queries, name)
	addrs, ok := in.records[name]
	if !ok {
		// "*.zone" records answer any name below zone.
		for n := name; strings.Contains(n, ".") && !ok; {
			_, n, _ = strings.Cut(n, ".")
			addrs, ok = in.records["*."+n]
		}
	}
	in.mu.Unlock()
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case qq.Qtype == dns.TypeA:
		for _, a := range addrs {
			if a.Is4() {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: a.AsSlice()})
			}
		}
	}
	_ = w.WriteMsg(m)
}

// SetRecord adds or replaces a DNS record while running.
func (in *Internet) SetRecord(name string, addrs ...netip.Addr) {
	in.mu.Lock()
	in.records[canon(name)] = addrs
	in.mu.Unlock()
}

// Requests returns what the echo servers have seen so far.
func (in *Internet) Requests() []Request {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Request(nil), in.requests...)
}

// Caught returns what the catcher has recorded so far.
func (in *Internet) Caught() []Catch {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Catch(nil), in.caught...)
}

// Queries returns the names the DNS server was asked for, in order.
func (in *Internet) Queries() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.queries...)
}

// RequestsFrom returns the requests whose client address is addr: a request
// from a sandbox address (rather than the host's proxy) is an escape.
func (in *Internet) RequestsFrom(addr netip.Addr) []Request {
	var out []Request
	for _, r := range in.Requests() {
		if ap, err := netip.ParseAddrPort(r.Remote); err == nil && ap.Addr() == addr {
			out = append(out, r)
		}
	}
	return out
}
