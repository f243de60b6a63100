package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestLookupAddrsTTL(t *testing.T) {
	srv := startServer(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch q.Name {
		case "short.test.": // the smallest TTL on the chain wins
			m.Answer = append(m.Answer, mustRR("short.test. 300 IN CNAME a.test."))
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, mustRR("a.test. 30 IN A 10.210.0.5"))
			}
		case "mixed.test.": // A and AAAA with different TTLs
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, mustRR("mixed.test. 120 IN A 10.210.0.6"))
			} else {
				m.Answer = append(m.Answer, mustRR("mixed.test. 45 IN AAAA fd00::6"))
			}
		case "zero.test.":
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, mustRR("zero.test. 0 IN A 10.210.0.7"))
			}
		case "halffail.test.": // AAAA fails: the answer may be incomplete
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, mustRR("halffail.test. 60 IN A 10.210.0.8"))
			} else {
				m.Rcode = dns.RcodeServerFailure
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	r := New([]netip.AddrPort{srv.addr}, Options{Timeout: time.Second})
	tests := []struct {
		host     string
		want     string
		ttl      time.Duration
		notFound bool
	}{
		{host: "short.test", want: "[10.210.0.5]", ttl: 30 * time.Second},
		{host: "mixed.test", want: "[10.210.0.6 fd00::6]", ttl: 45 * time.Second},
		{host: "zero.test", want: "[10.210.0.7]", ttl: 0},
		{host: "halffail.test", want: "[10.210.0.8]", ttl: 0},
		{host: "missing.test", notFound: true},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			addrs, ttl, err := r.LookupAddrsTTL(context.Background(), tc.host)
			if tc.notFound {
				if !errors.Is(err, ErrNotFound) || ttl != 0 {
					t.Fatalf("err %v ttl %v, want ErrNotFound and no TTL", err, ttl)
				}
				return
			}
			if err != nil || fmt.Sprint(addrs) != tc.want || ttl != tc.ttl {
				t.Fatalf("= %v %v %v, want %s %v", addrs, ttl, err, tc.want, tc.ttl)
			}
		})
	}
}
