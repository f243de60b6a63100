package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// chain returns n chained lines as a Writer writes them.
func chain(t *testing.T, n int) []string {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, "", newClock().Now)
	for i := 0; i < n; i++ {
		w.Emit(&Event{Type: TypeHTTP, Decision: Allow, Host: fmt.Sprintf("h%d.example.com", i), Status: 200})
	}
	if err := w.Err(); err != nil {
		t.Fatal(err)
	}
	out := strings.SplitAfter(buf.String(), "\n")
	return out[:len(out)-1] // after the last newline: ""
}

func verifyString(t *testing.T, s string) Result {
	t.Helper()
	res, err := Verify(strings.NewReader(s), "")
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestWriterChain(t *testing.T) {
	var buf bytes.Buffer
	clock := newClock()
	w := NewWriter(&buf, "", clock.Now)
	var written [][]byte
	w.OnWrite = func(line []byte) { written = append(written, append([]byte(nil), line...)) }
	w.Emit(&Event{Type: TypeHTTP, Decision: Allow, Host: "a.example.com", Credential: "openai"})
	ts := time.Date(2020, 5, 6, 7, 8, 9, 10, time.FixedZone("X", 3600))
	w.Emit(&Event{TS: ts, Type: TypeDNS, Decision: Deny, QName: "x.example.com", Prev: "forged"})
	res := verifyString(t, buf.String())
	if res.Broken != nil || res.Lines != 2 || res.Last != w.Prev() || len(written) != 2 {
		t.Fatalf("Verify = %+v, prev %s, written %d", res, w.Prev(), len(written))
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var e1, e2 map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &e1); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &e2); err != nil {
		t.Fatal(err)
	}
	if e1["prev"] != "" || e1["ts"] != "2026-01-02T03:04:05.000000006Z" || e1["credential"] != "openai" {
		t.Errorf("first event %v", e1)
	}
	if e2["prev"] != HashLine([]byte(lines[0])) || e2["ts"] != "2020-05-06T06:08:09.00000001Z" {
		t.Errorf("second event %v (TS must be kept, made UTC; prev always set)", e2)
	}
	if string(written[0]) != lines[0] {
		t.Error("OnWrite got a different line")
	}
	// Empty fields are omitted, prev never is.
	if _, ok := e1["status"]; ok {
		t.Error("zero status written")
	}
}

func TestVerifyTampering(t *testing.T) {
	lines := chain(t, 6)
	join := func(ls []string) string { return strings.Join(ls, "") }
	replace := func(i int, s string) []string {
		out := append([]string(nil), lines...)
		out[i] = s
		return out
	}
	edited := strings.Replace(lines[2], "h2.example.com", "h2.evil.com", 1)
	// A forged line carrying the right prev for its place.
	forged := func(prevLine string) string {
		b, _ := json.Marshal(&Event{TS: time.Unix(1, 0).UTC(), Type: TypeHTTP, Host: "forged", Prev: HashLine([]byte(strings.TrimSuffix(prevLine, "\n")))})
		return string(b) + "\n"
	}
	cases := []struct {
		name  string
		input string
		line  int
		msg   string
	}{
		{"intact", join(lines), 0, ""},
		{"empty", "", 0, ""},
		{"changed line 3", join(replace(2, edited)), 4, "hash of line 3"},
		{"changed prev of line 3", join(replace(2, strings.Replace(lines[2], `"prev":"`, `"prev":"0`, 1))), 3, "hash of line 2"},
		{"changed first line", join(replace(0, strings.Replace(lines[0], "h0", "hX", 1))), 2, "hash of line 1"},
		{"first line prev not empty", join(replace(0, strings.Replace(lines[0], `"prev":""`, `"prev":"ab"`, 1))), 1, "first line"},
		{"removed line 3", join(append(append([]string(nil), lines[:2]...), lines[3:]...)), 3, "hash of line 2"},
		{"removed first line", join(lines[1:]), 1, "first line"},
		{"inserted line with wrong prev", join(append(append(append([]string(nil), lines[:3]...), forged(lines[0])), lines[3:]...)), 4, "hash of line 3"},
		{"inserted line with right prev", join(append(append(append([]string(nil), lines[:3]...), forged(lines[2])), lines[3:]...)), 5, "hash of line 4"},
		{"reordered lines 3 and 4", join(append(append(append([]string(nil), lines[:2]...), lines[3], lines[2]), lines[4:]...)), 3, "hash of line 2"},
		{"duplicated line", join(append(append([]string(nil), lines[:3]...), lines[2:]...)), 4, "hash of line 3"},
		{"truncated last line", join(lines)[:len(join(lines))-10], 6, "truncated"},
		{"missing final newline", strings.TrimSuffix(join(lines), "\n"), 6, "truncated"},
		{"empty line", join(lines[:2]) + "\n" + join(lines[2:]), 3, "empty line"},
		{"garbage line", join(lines[:2]) + "hello\n" + join(lines[2:]), 3, "not a JSON object"},
		{"no prev", join(lines[:2]) + "{\"type\":\"http\"}\n", 3, "no prev field"},
		{"null line", "null\n", 1, "no prev field"},
		{"CRLF line ending", strings.Replace(join(lines), "\n", "\r\n", 1), 2, "hash of line 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := verifyString(t, c.input)
			if c.line == 0 {
				if res.Broken != nil {
					t.Fatalf("broken: %v", res.Broken)
				}
				return
			}
			if res.Broken == nil || res.Broken.Line != c.line || !strings.Contains(res.Broken.Msg, c.msg) {
				t.Fatalf("Broken = %v, want line %d: ...%s...", res.Broken, c.line, c.msg)
			}
			if !strings.HasPrefix(res.Broken.Error(), fmt.Sprintf("line %d: ", c.line)) {
				t.Errorf("Error() = %q", res.Broken.Error())
			}
		})
	}
	// Verify continues a chain from a given hash.
	res, _ := Verify(strings.NewReader(join(lines[3:])), HashLine([]byte(strings.TrimSuffix(lines[2], "\n"))))
	if res.Broken != nil || res.Lines != 3 {
		t.Errorf("continued chain: %+v", res)
	}
}

func TestOpenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		s.Emit(&Event{Type: TypeAdmin, Action: fmt.Sprint(i)})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	// Reopening resumes the chain.
	s, err = OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(&Event{Type: TypeAdmin, Action: "3"})
	s.Emit(&Event{Type: TypeAdmin, Action: "4"})
	s.Close()
	f, _ := os.Open(path)
	res, err := Verify(f, "")
	f.Close()
	if err != nil || res.Broken != nil || res.Lines != 5 {
		t.Fatalf("resumed chain: %+v %v", res, err)
	}
	// A broken file is refused, and left as it was.
	data, _ := os.ReadFile(path)
	tampered := bytes.Replace(data, []byte(`"action":"1"`), []byte(`"action":"X"`), 1)
	os.WriteFile(path, tampered, 0o600)
	if _, err := OpenFile(path); err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "move it aside") {
		t.Errorf("OpenFile on a broken file: %v", err)
	}
	// So is one whose last line was cut short by a crash.
	os.WriteFile(path, data[:len(data)-5], 0o600)
	if _, err := OpenFile(path); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("OpenFile on a truncated file: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, data[:len(data)-5]) {
		t.Error("OpenFile changed a broken file")
	}
	if _, err := OpenFile(filepath.Join(t.TempDir(), "no", "such", "dir.jsonl")); err == nil {
		t.Error("OpenFile in a missing directory succeeded")
	}
}

func TestConcurrentEmit(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, "", nil)
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				w.Emit(&Event{Type: TypeHTTP, Host: fmt.Sprintf("g%d-%d", g, i)})
			}
		}()
	}
	wg.Wait()
	res := verifyString(t, buf.String())
	if res.Broken != nil || res.Lines != goroutines*each {
		t.Fatalf("%+v", res)
	}
}

type recordSink struct {
	mu     sync.Mutex
	events []*Event
}

func (r *recordSink) Emit(e *Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func TestMulti(t *testing.T) {
	a, b := &recordSink{}, &recordSink{}
	e := &Event{Type: TypeHTTP, Host: "x"}
	Multi(a, b, Discard).Emit(e)
	if len(a.events) != 1 || len(b.events) != 1 || a.events[0] == b.events[0] || a.events[0] == e {
		t.Fatal("Multi must hand each sink its own copy")
	}
	// Each sink chains independently.
	var b1, b2 bytes.Buffer
	m := Multi(NewWriter(&b1, "", nil), NewWriter(&b2, "", nil))
	for i := 0; i < 3; i++ {
		m.Emit(&Event{Type: TypeDNS, QName: "q"})
	}
	if r := verifyString(t, b1.String()); r.Broken != nil || r.Lines != 3 {
		t.Error(r)
	}
	if r := verifyString(t, b2.String()); r.Broken != nil || r.Lines != 3 {
		t.Error(r)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestWriterError(t *testing.T) {
	w := NewWriter(failWriter{}, "p", nil)
	w.Emit(&Event{Type: TypeHTTP})
	if w.Err() == nil || w.Prev() != "p" {
		t.Errorf("Err %v, Prev %q: a failed write must not advance the chain", w.Err(), w.Prev())
	}
}

// A long log is not read whole before appending: OpenFile checks its last
// tailCheck bytes. Damage there is refused; older damage is left for
// `cagent audit verify`, which still finds it after the append.
func TestOpenFileChecksTheTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 200)
	n := 0
	for st, _ := os.Stat(path); st == nil || st.Size() < 3*tailCheck; st, _ = os.Stat(path) {
		s.Emit(&Event{Type: TypeAdmin, Action: fmt.Sprint(n), Reason: pad})
		n++
	}
	s.Close()
	good, _ := os.ReadFile(path)

	// Damage in the tail is refused.
	last := fmt.Sprintf(`"action":"%d"`, n-2)
	os.WriteFile(path, bytes.Replace(good, []byte(last), []byte(`"action":"X"`), 1), 0o600)
	if _, err := OpenFile(path); err == nil || !strings.Contains(err.Error(), "counting from byte") {
		t.Errorf("OpenFile with a changed line in the tail: %v", err)
	}

	// Damage before it is not looked at: the append continues the chain
	// from the last line, and a full verify still reports the old break.
	os.WriteFile(path, bytes.Replace(good, []byte(`"action":"1"`), []byte(`"action":"X"`), 1), 0o600)
	s, err = OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(&Event{Type: TypeAdmin, Action: "appended"})
	s.Close()
	f, _ := os.Open(path)
	res, _ := Verify(f, "")
	f.Close()
	if res.Broken == nil || res.Broken.Line != 3 {
		t.Errorf("full verify after the append: %+v, want the break at line 3", res.Broken)
	}
	data, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(data), "\n") // n lines, the appended one, ""
	if tail, _ := Verify(strings.NewReader(lines[n]), HashLine([]byte(strings.TrimSuffix(lines[n-1], "\n")))); tail.Broken != nil || tail.Lines != 1 || len(lines) != n+2 {
		t.Errorf("the appended line does not continue the chain: %+v (%d lines)", tail, len(lines))
	}

	// A last line longer than the window: the whole file is checked.
	path2 := filepath.Join(t.TempDir(), "big.jsonl")
	s, _ = OpenFile(path2)
	s.Emit(&Event{Type: TypeAdmin, Action: "small"})
	s.Emit(&Event{Type: TypeAdmin, Action: "big", Reason: strings.Repeat("y", 2*tailCheck)})
	s.Close()
	s, err = OpenFile(path2)
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(&Event{Type: TypeAdmin, Action: "after"})
	s.Close()
	f, _ = os.Open(path2)
	res, _ = Verify(f, "")
	f.Close()
	if res.Broken != nil || res.Lines != 3 {
		t.Errorf("after a line longer than the window: %+v", res)
	}
}
