package dnsfilter

import (
	"context"
	"github.com/cagent-dev/cagent/internal/testutil"
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
	stderr := &testutil.SyncBuffer{}
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

func TestRunAuditToStdout(t *testing.T) {
	up := startUpstream(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cagent.yaml")
	os.WriteFile(cfgPath, []byte("dns: {answer: upstream}\ndomains: [{domain: allowed.test}]\n"), 0o600)
	stdout := &testutil.SyncBuffer{}
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
