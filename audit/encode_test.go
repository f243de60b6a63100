package audit

import (
	"encoding/json"
	"testing"
	"time"
)

func TestAppendEventMatchesMarshal(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	for _, e := range []Event{
		{TS: ts, Type: "dns", Prev: ""},
		{TS: ts.Truncate(time.Second), Type: "dns", Agent: "a", Decision: "deny", Reason: `label "x<y>&z" \ 	tab` + "\x01\u2028\xff\u00e9", Rule: "r",
			Error: "e", Client: "127.0.0.1", QName: "a\\000b.test", QType: "A", RCode: "NXDOMAIN", Answer: []string{"A 1.2.3.4", "CNAME x"}, Action: "act", Prev: "abc"},
		{TS: ts, Type: "dns", Detail: map[string]string{"k": "v"}, Prev: "p"},
		{TS: ts, Type: "http", Method: "GET", Port: 443, Prev: "p"},
		{TS: ts, Type: "http", Agent: "a", Decision: "allow", Method: "POST", Scheme: "https", Host: "api.test", Port: 443, Path: "/v1/<x>",
			Status: 200, BytesUp: -1, BytesDown: 1 << 40, DurationMS: 7, Intercepted: true, Credential: "tok", Client: "1.2.3.4:5", Upstream: "5.6.7.8:443", Prev: "p"},
		{TS: ts, Type: "admin", Action: "login", Actor: "me", Detail: map[string]string{"z": "1", "a": "\xff", "B": "<", "": "e"}},
		{TS: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), Type: ""},
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
	// A time json.Marshal refuses is refused here too.
	if _, err := appendEvent(nil, &Event{TS: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Error("year 10000 encoded")
	}
}

func FuzzAppendEvent(f *testing.F) {
	f.Add("reason", "a.test", "A 1.2.3.4", int64(0), int64(0), "")
	f.Add("\xff<>&\u2028\"\\\x00", "q\\000.test", "", int64(1<<40), int64(-3), "k")
	f.Fuzz(func(t *testing.T, reason, qname, answer string, ns, n int64, key string) {
		e := Event{TS: time.Unix(0, ns).UTC(), Type: "dns", Reason: reason, QName: qname, Prev: "x",
			Port: int(n), BytesUp: n, Host: answer, Intercepted: n%2 == 1}
		if answer != "" {
			e.Answer = []string{answer, reason}
		}
		if key != "" {
			e.Detail = map[string]string{key: reason, reason: qname}
		}
		want, _ := json.Marshal(&e)
		got, err := appendEvent(nil, &e)
		if err != nil || string(got) != string(want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	e := Event{TS: time.Now().UTC(), Type: TypeHTTP, Agent: "bench", Decision: Allow, Rule: "domains api.test", Method: "GET", Scheme: "http",
		Host: "api.test", Port: 80, Path: "/v1/models", Status: 200, BytesUp: 120, BytesDown: 64, Client: "127.0.0.1:40000", Upstream: "127.0.0.1:8080",
		Prev: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			json.Marshal(&e)
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for range b.N {
			buf, _ = appendEvent(buf[:0], &e)
		}
	})
}
