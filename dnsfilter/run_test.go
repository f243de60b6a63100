package dnsfilter

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cagent-dev/cagent/audit"
)

// syncBuffer is a goroutine-safe bytes.Buffer for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRun(t *testing.T) {
	up := startUpstream(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cagent.yaml")
	if err := os.WriteFile(cfgPath, []byte("domains: [{domain: allowed.test, alias: allowed}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{}
	var mu sync.Mutex
	listening := make(chan struct{})
	stderr := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunConfig{
			ConfigPath: cfgPath,
			Listen:     "127.0.0.1:0",
			Admin:      "127.0.0.1:0",
			Upstreams:  []string{up.addr.String()},
			Gateway:    "10.209.0.1",
			StateDir:   dir,
			Agent:      "run-test",
			Stderr:     stderr,
			ResolvConf: "/nonexistent",
			OnListen: func(name string, a net.Addr) {
				mu.Lock()
				addrs[name] = a.String()
				if len(addrs) == 3 {
					close(listening)
				}
				mu.Unlock()
			},
		})
	}()
	select {
	case <-listening:
	case err := <-done:
		t.Fatalf("Run: %v\n%s", err, stderr)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not listen")
	}
	ask := func(proto, name string) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.SetEdns0(1232, false)
		c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
		r, _, err := c.Exchange(m, addrs[proto])
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		return r
	}
	for _, proto := range []string{"udp", "tcp"} {
		if r := ask(proto, "allowed.test."); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s allowed: %v", proto, r)
		}
		if r := ask(proto, "evil.test."); r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s evil: %v", proto, r)
		}
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addrs["admin"] + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz %d %q", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, `cagent_dns_queries_total{decision="deny",error="destination_not_allowed",qtype="A"} 2`) {
		t.Fatalf("/metrics lacks the query counter:\n%s", body)
	}

	// A reload through the file: evil.test becomes allowed.
	if err := os.WriteFile(cfgPath, []byte("domains: [{domain: evil.test}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ask("udp", "evil.test.").Rcode != dns.RcodeSuccess {
		if time.Now().After(deadline) {
			t.Fatalf("reload not applied\n%s", stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An invalid file is rejected; the last good policy keeps running.
	if err := os.WriteFile(cfgPath, []byte("domains: [{domain: 'http://x'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, body := get("/readyz"); strings.Contains(body, "last policy reload failed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("invalid reload not reported")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := ask("udp", "evil.test."); r.Rcode != dns.RcodeSuccess {
		t.Fatal("invalid policy replaced the running one")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	// The audit log is an intact hash chain with one event per query.
	f, err := os.Open(filepath.Join(dir, "audit", "dns.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := audit.Verify(f, "")
	if err != nil || res.Broken != nil || res.Lines < 6 {
		t.Fatalf("audit: %+v %v", res, err)
	}
}

func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("domains: [{domain: allowed.test}]\n"), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("dns:\n  answer: sideways\n"), 0o600)
	tests := []struct {
		name string
		rc   RunConfig
		want string
	}{
		{"no config", RunConfig{}, "--config is required"},
		{"bad upstream", RunConfig{ConfigPath: good, Upstreams: []string{"resolver.example"}}, "--upstream"},
		{"bad gateway", RunConfig{ConfigPath: good, Gateway: "fd00::1"}, "--gateway"},
		{"bad listen", RunConfig{ConfigPath: good, Listen: "localhost:53"}, "--listen"},
		{"bad log format", RunConfig{ConfigPath: good, LogFormat: "xml"}, "--log-format"},
		{"invalid policy", RunConfig{ConfigPath: bad, Upstreams: []string{"127.0.0.1"}}, "dns.answer"},
		{"gateway mode without gateway", RunConfig{ConfigPath: good, Upstreams: []string{"127.0.0.1"}}, "--gateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.rc.StateDir = dir
			tc.rc.Stderr = io.Discard
			tc.rc.Listen = "127.0.0.1:0"
			if tc.name == "bad listen" {
				tc.rc.Listen = "localhost:53"
			}
			tc.rc.Admin = "127.0.0.1:0"
			err := Run(context.Background(), tc.rc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestBatchSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	for round := 0; round < 2; round++ { // the second round resumes the chain
		s, err := openBatchFile(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 500; i++ {
					s.Emit(&audit.Event{Type: audit.TypeDNS, QName: "x.test"})
				}
			}()
		}
		wg.Wait()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := audit.Verify(f, "")
	if err != nil || res.Broken != nil || res.Lines != 4000 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestAppendEventMatchesMarshal(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	for _, e := range []audit.Event{
		{TS: ts, Type: "dns", Prev: ""},
		{TS: ts.Truncate(time.Second), Type: "dns", Agent: "a", Decision: "deny", Reason: `label "x<y>&z" \ 	tab` + "\x01\u2028\xff\u00e9", Rule: "r",
			Error: "e", Client: "127.0.0.1", QName: "a\\000b.test", QType: "A", RCode: "NXDOMAIN", Answer: []string{"A 1.2.3.4", "CNAME x"}, Action: "act", Prev: "abc"},
		{TS: ts, Type: "dns", Detail: map[string]string{"k": "v"}, Prev: "p"},
		{TS: ts, Type: "http", Method: "GET", Port: 443, Prev: "p"},
	} {
		want, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendEvent(nil, &e)
		if err != nil || string(got) != string(want) {
			t.Errorf("appendEvent:\n got %s\nwant %s", got, want)
		}
	}
}

func FuzzAppendEvent(f *testing.F) {
	f.Add("reason", "a.test", "A 1.2.3.4", int64(0))
	f.Add("\xff<>&\u2028\"\\\x00", "q\\000.test", "", int64(1<<40))
	f.Fuzz(func(t *testing.T, reason, qname, answer string, ns int64) {
		e := audit.Event{TS: time.Unix(0, ns).UTC(), Type: "dns", Reason: reason, QName: qname, Prev: "x"}
		if answer != "" {
			e.Answer = []string{answer, reason}
		}
		want, _ := json.Marshal(&e)
		got, err := appendEvent(nil, &e)
		if err != nil || string(got) != string(want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}

func TestRunAuditToStdout(t *testing.T) {
	up := startUpstream(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cagent.yaml")
	os.WriteFile(cfgPath, []byte("dns: {answer: upstream}\ndomains: [{domain: allowed.test}]\n"), 0o600)
	stdout := &syncBuffer{}
	udp := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunConfig{ConfigPath: cfgPath, Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Upstreams: []string{up.addr.String()},
			StateDir: dir, AuditLog: "-", Stdout: stdout, Stderr: io.Discard, ResolvConf: "/nonexistent",
			OnListen: func(name string, a net.Addr) {
				if name == "udp" {
					udp <- a.String()
				}
			}})
	}()
	var addr string
	select {
	case addr = <-udp:
	case err := <-done:
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion("evil.test.", dns.TypeA)
	if _, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, addr); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	res, err := audit.Verify(strings.NewReader(stdout.String()), "")
	if err != nil || res.Broken != nil || res.Lines != 1 || !strings.Contains(stdout.String(), `"qname":"evil.test"`) {
		t.Fatalf("stdout audit: %+v %v\n%s", res, err, stdout)
	}
}
