package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
)

// slogLine is what slog.TextHandler writes for the egress line at t.
func slogLine(t *testing.T, at time.Time, level slog.Level, ev *audit.Event) string {
	t.Helper()
	var buf bytes.Buffer
	r := slog.NewRecord(at, level, "egress", 0)
	r.AddAttrs(egressAttrs(ev)...)
	if err := slog.NewTextHandler(&buf, nil).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// The fast path must write exactly slog's bytes: agent-chosen fields (path,
// method, host) are quoted by the same rules, so no line can be forged.
func TestEgressLineMatchesSlog(t *testing.T) {
	tricky := []string{
		"", " ", "=", `"`, `\`, `a\b`, "plain", "/p/a/t/h", "a b", "a=b", "x\ny", "x\r\ny", "\t",
		"\x00", "\x1f", "\x7f", "caf\u00e9", "\u2028", "\u00a0", "\ufffd", "\xff", "a\xc3", "\u200b",
		"level=ERROR msg=forged", "😀", "%41%0a", "ip_ranges 127.0.0.1/32", "[::1]:80",
	}
	times := []time.Time{
		time.Date(2026, 11, 25, 15, 9, 47, 18_000_000, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", -7*3600-1800)),
		time.Now(), // local zone, monotonic reading
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string {
		if rng.IntN(4) == 0 {
			b := make([]byte, rng.IntN(12))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			return string(b)
		}
		return tricky[rng.IntN(len(tricky))]
	}
	for i := range 3000 {
		ev := &audit.Event{
			Type: pick(), Decision: pick(), Error: pick(), Rule: pick(), Agent: pick(), Client: pick(),
			Method: pick(), Scheme: pick(), Host: pick(), Port: rng.IntN(70000) - 10, Path: pick(),
			Status: rng.IntN(600), BytesUp: rng.Int64() - rng.Int64(), BytesDown: rng.Int64N(1 << 40),
			DurationMS: rng.Int64N(1e6), Intercepted: rng.IntN(2) == 0, Credential: pick(),
			Upstream: pick(), Reason: pick(),
		}
		if i < len(tricky) {
			ev.Path = tricky[i] // every tricky string at least once
		}
		at := times[i%len(times)]
		level := []slog.Level{slog.LevelInfo, slog.LevelWarn}[i%2]
		want := slogLine(t, at, level, ev)
		if got := string(appendEgressLine(nil, at, level, ev)); got != want {
			t.Fatalf("event %+v:\n got %q\nwant %q", ev, got, want)
		}
	}
}

func TestLogEgress(t *testing.T) {
	ev := &audit.Event{Type: "http", Decision: "allow", Path: "/a b", Port: 80, Status: 200}
	tests := []struct {
		name  string
		log   func(*bytes.Buffer) *slog.Logger
		level slog.Level
		want  string // the line after its time field; "" for none
	}{
		{"fast path", func(b *bytes.Buffer) *slog.Logger { return slog.New(newLineHandler(b)) }, slog.LevelInfo,
			`level=INFO msg=egress type=http decision=allow error="" rule="" agent="" client="" method="" scheme="" host="" port=80 path="/a b" status=200 bytes_up=0 bytes_down=0 duration_ms=0 intercepted=false credential="" upstream="" reason=""`},
		{"derived logger falls back to slog", func(b *bytes.Buffer) *slog.Logger { return slog.New(newLineHandler(b)).With("c", "d") }, slog.LevelWarn,
			`level=WARN msg=egress c=d type=http decision=allow`},
		{"below the handler's level", func(b *bytes.Buffer) *slog.Logger {
			return slog.New(&lineHandler{TextHandler: slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn}), w: b})
		}, slog.LevelInfo, ""},
		{"json", func(b *bytes.Buffer) *slog.Logger { return slog.New(slog.NewJSONHandler(b, nil)) }, slog.LevelInfo,
			`"level":"INFO","msg":"egress","type":"http"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			logEgressAt(tt.log(&buf), tt.level, ev, time.Now())
			out := buf.String()
			if tt.want == "" {
				if out != "" {
					t.Fatalf("logged %q", out)
				}
				return
			}
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, tt.want) {
				t.Fatalf("got %q, want one line containing %q", out, tt.want)
			}
		})
	}
}

// appendRFC3339Millis must write what the layout it replaces writes, for
// any time: zero and trailing-zero fractions, years of fewer or more than
// four digits, zones east and west, offsets with seconds (LMT zones).
func TestAppendRFC3339Millis(t *testing.T) {
	const layout = "2006-01-02T15:04:05.000Z07:00"
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("W", -7*3600-1800), time.FixedZone("E", 5*3600+45*60),
		time.FixedZone("S", 30), time.FixedZone("-S", -30), time.FixedZone("-M", -59), time.FixedZone("LMT", -(4*3600 + 56*60 + 2))}
	if ny, err := time.LoadLocation("America/New_York"); err == nil {
		zones = append(zones, ny) // LMT before 1883
	}
	check := func(tm time.Time) {
		t.Helper()
		want := tm.AppendFormat([]byte("x"), layout)
		if got := appendRFC3339Millis([]byte("x"), tm); string(got) != string(want) {
			t.Fatalf("%v: got %q, want %q", tm, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	nanos := []int{0, 1, 999_999, 1_000_000, 10_000_000, 100_000_000, 120_000_000, 999_999_999, 5_000}
	for i := range 200000 {
		var sec int64
		switch i % 4 {
		case 0: // around now
			sec = time.Now().Unix() + rng.Int64N(1<<32) - 1<<31
		case 1: // years 0000-9999
			sec = rng.Int64N(253402300800+62135596800) - 62135596800
		default: // anything, negative and five-digit years included
			sec = rng.Int64N(1<<40) - 1<<39
		}
		ns := rng.IntN(1e9)
		if i%3 == 0 {
			ns = nanos[rng.IntN(len(nanos))]
		}
		check(time.Unix(sec, int64(ns)).In(zones[rng.IntN(len(zones))]))
	}
	check(time.Time{})
	check(time.Now())
	check(time.Date(999, 1, 1, 0, 0, 0, 0, time.UTC))
	check(time.Date(-1, 12, 31, 23, 59, 59, 999_000_000, time.UTC))
	check(time.Date(10000, 1, 1, 0, 0, 0, 1_000_000, time.UTC))
}

func TestAppendQuoteMatchesStrconv(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 100000 {
		var b []byte
		switch {
		case i < 256:
			b = []byte{byte(i)}
		case i%2 == 0: // printable ASCII, quotes and backslashes
			b = make([]byte, rng.IntN(20))
			for j := range b {
				b[j] = " \"\\a=~"[rng.IntN(6)]
			}
		default:
			b = make([]byte, rng.IntN(20))
			for j := range b {
				b[j] = byte(rng.IntN(256))
			}
		}
		if got, want := appendQuote([]byte("x"), string(b)), strconv.AppendQuote([]byte("x"), string(b)); string(got) != string(want) {
			t.Fatalf("%q: got %s, want %s", b, got, want)
		}
	}
}
