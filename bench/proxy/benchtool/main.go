// Command benchtool is the upstream side and the load generator of
// bench/proxy/run.sh. Everything it serves binds to loopback, and its DNS
// server answers *.test with 127.0.0.1 so that no benchmark ever asks the
// machine's resolver.
//
//	benchtool serve --dir DIR --http ADDR --tls ADDR --raw ADDR --dns ADDR
//	benchtool load  --mode MODE --proxy ADDR --target HOST:PORT [...]
//
// Modes: connect-down (bulk download through CONNECT, MB/s; --rate has the
// upstream pace each connection, standing in for a link), connect-rtt
// (request latency inside one tunnel), https (keep-alive HTTPS req/s and
// latency), connect-open (tunnel setup time, one CONNECT after another),
// hold (open N tunnels and keep them until stdin closes), http-count
// (exactly --requests absolute-form GETs through the proxy, for
// bench/proxy/instr.sh).
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagent-dev/cagent/bench/rawproto"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool serve|load ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

var small = []byte(strings.Repeat("x", 64))

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	dir := fs.String("dir", ".", "where to write ca.pem")
	httpAddr := fs.String("http", "127.0.0.1:18080", "plain HTTP")
	tlsAddr := fs.String("tls", "127.0.0.1:18443", "HTTPS")
	rawAddr := fs.String("raw", "127.0.0.1:18099", "raw TCP: streams zeros to every client, discards input")
	dnsAddr := fs.String("dns", "127.0.0.1:18053", "DNS: *.test -> 127.0.0.1")
	fs.Parse(args)

	cert, caPEM, err := makeCert()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "ca.pem"), caPEM, 0o644); err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.Write(small)
	})
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	go http.Serve(hl, h)
	tl, err := tls.Listen("tcp", *tlsAddr, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return err
	}
	go http.Serve(tl, h)
	rl, err := net.Listen("tcp", *rawAddr)
	if err != nil {
		return err
	}
	go func() {
		zeros := make([]byte, 256<<10)
		for {
			c, err := rl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// The opening message chooses (package rawproto); whatever
				// the client sends after it is discarded.
				msg, err := rawproto.ReadOpening(c)
				if err != nil {
					return
				}
				go io.Copy(io.Discard, c)
				switch msg[0] {
				case 'p':
					if err := pace(c, msg); err != nil {
						fmt.Fprintln(os.Stderr, "benchtool: pace:", err)
						return
					}
					fallthrough
				case 'd':
					for {
						if _, err := c.Write(zeros); err != nil {
							return
						}
					}
				case 'h':
					select {}
				}
			}()
		}
	}()
	ds := &dns.Server{Addr: *dnsAddr, Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		if !strings.HasSuffix(strings.ToLower(q.Name), ".test.") {
			m.Rcode = dns.RcodeNameError
		} else if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)})
		}
		w.WriteMsg(m)
	})}
	go ds.ListenAndServe()
	fmt.Println("ready")
	select {}
}

func makeCert() (tls.Certificate, []byte, error) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	t := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bench.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"*.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

// pace caps the connection's sending rate at the rate of a paced opening
// message with TCP's own pacing (SO_MAX_PACING_RATE), which stands in for
// a link of that speed between the upstream and everything else.
func pace(c net.Conn, msg []byte) error {
	mbps, err := rawproto.Rate(msg)
	if err != nil {
		return err
	}
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, int(mbps*1e6))
	}); err != nil {
		return err
	}
	return serr
}

// dialVia opens a connection to target, through a CONNECT proxy unless proxy is "".
func dialVia(proxy, target string) (net.Conn, error) {
	if proxy == "" {
		return net.Dial("tcp", target)
	}
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != 200 {
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: %s", target, resp.Status)
	}
	if br.Buffered() > 0 {
		c.Close()
		return nil, fmt.Errorf("unexpected bytes after CONNECT")
	}
	return c, nil
}

// roundTrip writes one request on c and reads its response from br: an
// error unless it is a 200 (a denial's reason included).
func roundTrip(c net.Conn, br *bufio.Reader, req string) error {
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %s (%s)", resp.Status, resp.Header.Get("X-Cagent-Deny-Reason"))
	}
	return nil
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	mode := fs.String("mode", "connect-down", "connect-down | connect-rtt | connect-open | https | hold | http-count")
	proxy := fs.String("proxy", "", "proxy address (empty: direct)")
	target := fs.String("target", "127.0.0.1:18099", "host:port")
	conns := fs.Int("conns", 1, "parallel connections")
	dur := fs.Duration("duration", 5*time.Second, "how long")
	caFile := fs.String("ca", "", "PEM roots for https mode (upstream CA and the proxy's)")
	requests := fs.Int("requests", 1000, "http-count: how many requests in all")
	rate := fs.Float64("rate", 0, "connect-down: have the upstream pace each connection to this many MB/s (0: as fast as it can)")
	fs.Parse(args)

	switch *mode {
	case "http-count":
		// Exactly -requests absolute-form GETs for target, through the
		// explicit proxy, over -conns keep-alive connections: a fixed amount
		// of work, for counting what the proxy spends per request.
		if *proxy == "" {
			return errors.New("http-count needs --proxy")
		}
		req := fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\nUser-Agent: benchtool\r\nAccept: */*\r\n\r\n", *target, *target)
		var wg sync.WaitGroup
		errc := make(chan error, *conns)
		for i := 0; i < *conns; i++ {
			n := *requests / *conns
			if i < *requests%*conns {
				n++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", *proxy)
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for j := 0; j < n; j++ {
					if err := roundTrip(c, br, req); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			return err
		}
		fmt.Printf("requests=%d\n", *requests)
	case "connect-down":
		var total atomic.Int64
		var wg sync.WaitGroup
		deadline := time.Now().Add(*dur)
		errc := make(chan error, *conns)
		for i := 0; i < *conns; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialVia(*proxy, *target)
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				if *rate > 0 {
					fmt.Fprintf(c, "p%g\n", *rate)
				} else {
					c.Write([]byte{'d'})
				}
				c.SetReadDeadline(deadline)
				buf := make([]byte, 256<<10)
				for {
					n, err := c.Read(buf)
					total.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
		start := time.Now()
		wg.Wait()
		select {
		case err := <-errc:
			return err
		default:
		}
		el := time.Since(start).Seconds()
		fmt.Printf("mbps=%.1f\n", float64(total.Load())/el/1e6)
	case "connect-rtt":
		c, err := dialVia(*proxy, *target)
		if err != nil {
			return err
		}
		defer c.Close()
		// Keep-alive HTTP requests inside one tunnel: target is the plain
		// HTTP server, so the round trip is the tunnel's added latency.
		br := bufio.NewReader(c)
		var lat []time.Duration
		req := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
		end := time.Now().Add(*dur)
		for time.Now().Before(end) {
			t0 := time.Now()
			if err := roundTrip(c, br, req); err != nil {
				return err
			}
			lat = append(lat, time.Since(t0))
		}
		p50, p99 := pct(lat, 50), pct(lat, 99)
		fmt.Printf("rps=%.0f p50_us=%.1f p99_us=%.1f\n", float64(len(lat))/dur.Seconds(), us(p50), us(p99))
	case "https":
		pool := x509.NewCertPool()
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return err
			}
			pool.AppendCertsFromPEM(pem)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: *conns, ForceAttemptHTTP2: false}
		if *proxy != "" {
			u, _ := url.Parse("http://" + *proxy)
			tr.Proxy = http.ProxyURL(u)
		}
		client := &http.Client{Transport: tr}
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		end := time.Now().Add(*dur)
		var firstErr atomic.Value
		for i := 0; i < *conns; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for time.Now().Before(end) {
					t0 := time.Now()
					resp, err := client.Get("https://" + *target + "/")
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						firstErr.CompareAndSwap(nil, fmt.Errorf("status %s (%s)", resp.Status, resp.Header.Get("X-Cagent-Deny-Reason")))
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return err
		}
		fmt.Printf("rps=%.0f p50_us=%.1f p99_us=%.1f\n", float64(len(lat))/dur.Seconds(), us(pct(lat, 50)), us(pct(lat, 99)))
	case "connect-open":
		// Tunnel setup: CONNECT, wait for the 200, close; one after the other.
		var lat []time.Duration
		end := time.Now().Add(*dur)
		for time.Now().Before(end) {
			t0 := time.Now()
			c, err := dialVia(*proxy, *target)
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(t0))
			c.Close()
		}
		fmt.Printf("rps=%.0f p50_us=%.1f p99_us=%.1f\n", float64(len(lat))/dur.Seconds(), us(pct(lat, 50)), us(pct(lat, 99)))
	case "hold":
		var cs []net.Conn
		for i := 0; i < *conns; i++ {
			c, err := dialVia(*proxy, *target)
			if err != nil {
				return fmt.Errorf("tunnel %d: %w", i, err)
			}
			c.Write([]byte{'h'})
			cs = append(cs, c)
		}
		fmt.Println("holding", len(cs))
		ctx, cancel := context.WithCancel(context.Background())
		go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
		<-ctx.Done()
		for _, c := range cs {
			c.Close()
		}
	default:
		return fmt.Errorf("unknown mode %q", *mode)
	}
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, len(d)*p/100)]
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }
