package fakeinet

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFakeInternet(t *testing.T) {
	meta := netip.MustParseAddr("169.254.169.254")
	in := Start(t, Options{Records: map[string][]netip.Addr{"Meta.Test": {meta}}})

	// DNS from the host, asked explicitly (never the machine's resolver).
	c := &dns.Client{Timeout: 3 * time.Second}
	ask := func(name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		r, _, err := c.Exchange(m, in.DNS.String())
		if err != nil {
			t.Fatalf("dns %s: %v", name, err)
		}
		return r
	}
	tests := []struct {
		name  string
		rcode int
		want  string
	}{
		{"web.test.", dns.RcodeSuccess, in.Web.String()},
		{"WEB.test.", dns.RcodeSuccess, in.Web.String()},
		{"catcher.test.", dns.RcodeSuccess, in.Catcher.String()},
		{"meta.test.", dns.RcodeSuccess, "169.254.169.254"},
		{"nope.test.", dns.RcodeNameError, ""},
	}
	for _, tc := range tests {
		r := ask(tc.name)
		if r.Rcode != tc.rcode {
			t.Errorf("%s: rcode %d, want %d", tc.name, r.Rcode, tc.rcode)
		}
		if tc.want != "" && (len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != tc.want) {
			t.Errorf("%s: answer %v, want %s", tc.name, r.Answer, tc.want)
		}
	}
	if q := in.Queries(); len(q) != len(tests) || q[0] != "web.test" {
		t.Errorf("queries = %v", q)
	}

	// HTTP and HTTPS echo, dialed by address so nothing resolves.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: in.CAPool, ServerName: "api.test"}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for _, u := range []string{"http://" + in.Web.String() + "/a%2Fb?x=1", "https://" + in.Web.String() + "/secure"} {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		var got Request
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if strings.HasPrefix(u, "https") && (!got.TLS || got.SNI != "api.test") {
			t.Errorf("https echo = %+v", got)
		}
		if strings.HasPrefix(u, "http:") && got.RequestURI != "/a%2Fb?x=1" {
			t.Errorf("http echo = %+v", got)
		}
	}
	if n := len(in.RequestsFrom(in.HostAddr)); n != 2 {
		t.Errorf("requests from host = %d, want 2", n)
	}

	// The catcher records TCP and UDP.
	conn, err := net.DialTimeout("tcp4", netip.AddrPortFrom(in.Catcher, 7777).String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	u, err := net.Dial("udp4", netip.AddrPortFrom(in.Catcher, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("x"))
	u.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 16)
	if _, err := u.Read(buf); err != nil {
		t.Fatal(err)
	}
	u.Close()
	deadline := time.Now().Add(3 * time.Second)
	for len(in.Caught()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := in.Caught(); len(got) != 2 {
		t.Errorf("caught = %+v", got)
	}

	// No default route inside the internet namespace.
	out, err := exec.Command("ip", "-n", in.NS, "route", "show", "default").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("default route in %s: %q %v", in.NS, out, err)
	}
	ns := in.NS
	in.Close()
	if netsetup.Exists(ns) {
		t.Errorf("namespace %s left behind", ns)
	}
}

func TestConcurrentInternets(t *testing.T) {
	a := Start(t, Options{})
	b := Start(t, Options{})
	if a.Subnet == b.Subnet || a.NS == b.NS {
		t.Fatalf("collision: %v %v", a.Subnet, b.Subnet)
	}
}
