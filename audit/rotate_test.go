package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

func firstPrev(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() {
		t.Fatalf("%s is empty", path)
	}
	var e Event
	if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	return e.Prev
}

func lastHash(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := verify(f, "", true)
	if err != nil || res.Broken != nil {
		t.Fatalf("%s: %v %v", path, err, res.Broken)
	}
	return res.Last
}

func openRotating(t *testing.T, cfg RotatingConfig) *Rotating {
	t.Helper()
	r, err := OpenRotating(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func emitN(r Sink, clock *fakeClock, n int, tag string) {
	for i := 0; i < n; i++ {
		if clock != nil {
			clock.Add(time.Second)
		}
		r.Emit(&Event{Type: TypeHTTP, Decision: Allow, Host: fmt.Sprintf("%s-%d.example.com", tag, i), Path: "/v1/models"})
	}
}

func TestRotatingRotatesAndChains(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	clock := newClock()
	const maxSize = 1024
	r := openRotating(t, RotatingConfig{Dir: dir, MaxSize: maxSize, Now: clock.Now, Retention: -1})
	emitN(r, clock, 60, "a")
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	files := listFiles(t, dir)
	if len(files) < 4 {
		t.Fatalf("%d files after 60 events of ~150 bytes with MaxSize %d", len(files), maxSize)
	}
	if r.Path() != files[len(files)-1] {
		t.Errorf("Path() = %s, want the newest file %s", r.Path(), files[len(files)-1])
	}
	for i, f := range files {
		st, _ := os.Stat(f)
		if st.Size() > maxSize || st.Size() == 0 {
			t.Errorf("%s: size %d", f, st.Size())
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", f, st.Mode().Perm())
		}
		want := ""
		if i > 0 {
			want = lastHash(t, files[i-1])
		}
		if got := firstPrev(t, f); got != want {
			t.Errorf("%s: first prev %q, want the last hash of the previous file %q", f, got, want)
		}
	}
	res, err := VerifyFiles(files...)
	if err != nil || res.Broken != nil || res.Events != 60 || res.Files != len(files) || res.Anchor != "" || res.Last != r.Prev() {
		t.Fatalf("VerifyFiles = %+v, %v", res, err)
	}
	// Names carry the clock's time, fixed width, so they sort in time order.
	if !strings.HasPrefix(filepath.Base(files[0]), "audit-20260102T030") {
		t.Errorf("first file %s", files[0])
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", st.Mode().Perm())
	}
}

func TestRotatingResume(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	r := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 4096, Now: clock.Now})
	emitN(r, clock, 5, "a")
	path := r.Path()
	r.Close()
	r.Emit(&Event{Type: TypeHTTP})
	if r.Err() == nil {
		t.Error("Emit after Close must record an error")
	}
	// Reopening appends to the same file, continuing its chain.
	r2 := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 4096, Now: clock.Now})
	if r2.Path() != path {
		t.Errorf("resumed %s, want %s", r2.Path(), path)
	}
	emitN(r2, clock, 5, "b")
	r2.Close()
	// Reopening when the newest file is full starts a new one, chained on.
	r3 := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 100, Now: clock.Now})
	if r3.Path() == path {
		t.Error("a full file was resumed")
	}
	emitN(r3, clock, 1, "c")
	r3.Close()
	files := listFiles(t, dir)
	res, err := VerifyFiles(files...)
	if err != nil || res.Broken != nil || res.Events != 11 || len(files) != 2 {
		t.Fatalf("VerifyFiles(%v) = %+v, %v", files, res, err)
	}
	// An empty newest file (a crash right after rotating) resumes from the
	// last file that has events.
	clock.Add(time.Hour)
	empty := filepath.Join(dir, "audit-"+clock.Now().UTC().Format(fileTimeLayout)+".jsonl")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r4 := openRotating(t, RotatingConfig{Dir: dir, Now: clock.Now})
	if r4.Path() != empty {
		t.Errorf("resumed %s, want the empty newest file", r4.Path())
	}
	emitN(r4, clock, 2, "d")
	r4.Close()
	if res, err := VerifyFiles(listFiles(t, dir)...); err != nil || res.Broken != nil || res.Events != 13 {
		t.Fatalf("after an empty file: %+v, %v", res, err)
	}
}

func TestRotatingRefusesBrokenChain(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	r := openRotating(t, RotatingConfig{Dir: dir, Now: clock.Now})
	emitN(r, clock, 3, "a")
	r.Close()
	path := r.Path()
	data, _ := os.ReadFile(path)
	os.WriteFile(path, data[:len(data)-3], 0o600) // crash mid-line
	_, err := OpenRotating(RotatingConfig{Dir: dir, Now: clock.Now})
	if !errors.Is(err, ErrBrokenChain) || !strings.Contains(err.Error(), path+":3:") {
		t.Fatalf("OpenRotating on a broken file: %v", err)
	}
	// Moving it aside (any name that is not audit-<time>.jsonl) lets a new chain start.
	os.Rename(path, path+".broken")
	r2 := openRotating(t, RotatingConfig{Dir: dir, Now: clock.Now})
	emitN(r2, clock, 1, "b")
	r2.Close()
	if got := firstPrev(t, r2.Path()); got != "" {
		t.Errorf("new chain starts with prev %q", got)
	}
}

func TestRotatingRetention(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	r := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 600, Retention: 10 * time.Hour, Now: clock.Now})
	// Ten files, one per hour.
	for h := 0; h < 10; h++ {
		emitN(r, nil, 4, fmt.Sprint(h))
		clock.Add(time.Hour)
	}
	before := listFiles(t, dir)
	if len(before) < 10 {
		t.Fatalf("%d files", len(before))
	}
	// Five hours later, files whose successor started more than ten hours ago go.
	clock.Add(5 * time.Hour)
	emitN(r, nil, 4, "late") // rotates, which prunes
	after := listFiles(t, dir)
	if len(after) >= len(before) || len(after) == 0 {
		t.Fatalf("retention kept %d of %d files", len(after), len(before))
	}
	cut := clock.Now().Add(-10 * time.Hour)
	for i := 0; i+1 < len(after); i++ {
		next, _ := time.Parse(fileTimeLayout, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(after[i+1]), "audit-"), ".jsonl"))
		if i == 0 && next.Before(cut) {
			t.Errorf("%s kept although its events all predate the retention", after[i])
		}
	}
	// The remaining files still verify, anchored on a deleted file.
	res, err := VerifyFiles(after...)
	if err != nil || res.Broken != nil || res.Anchor == "" {
		t.Fatalf("after retention: %+v, %v", res, err)
	}
	// Even with everything expired, the newest file stays.
	clock.Add(1000 * time.Hour)
	r.Close()
	r2 := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 600, Retention: time.Hour, Now: clock.Now})
	if files := listFiles(t, dir); len(files) != 1 || files[0] != r2.Path() {
		t.Errorf("after everything expired: %v", files)
	}
}

func TestRotatingEdgeCases(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	r := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 300, Retention: -1, Now: clock.Now})
	// A line larger than MaxSize gets a file of its own.
	r.Emit(&Event{Type: TypeHTTP, Host: "small"})
	r.Emit(&Event{Type: TypeHTTP, Reason: strings.Repeat("x", 1000)})
	r.Emit(&Event{Type: TypeHTTP, Host: "small"})
	// The clock stepping back (or standing still) never breaks name order.
	clock.Add(-24 * time.Hour)
	for i := 0; i < 5; i++ {
		r.Emit(&Event{Type: TypeHTTP, Reason: strings.Repeat("y", 200)})
	}
	r.Close()
	files := listFiles(t, dir)
	if len(files) != 8 {
		t.Errorf("%d files, want 8", len(files))
	}
	res, err := VerifyFiles(files...)
	if err != nil || res.Broken != nil || res.Events != 8 {
		t.Fatalf("%+v, %v", res, err)
	}
	// Files that are not audit-<time>.jsonl are left alone.
	other := filepath.Join(dir, "notes.jsonl")
	os.WriteFile(other, []byte("x\n"), 0o600)
	r2 := openRotating(t, RotatingConfig{Dir: dir, Retention: time.Nanosecond, Now: clock.Now})
	r2.Emit(&Event{Type: TypeHTTP})
	if _, err := os.Stat(other); err != nil {
		t.Error("a foreign file was deleted")
	}
	if _, err := OpenRotating(RotatingConfig{}); err == nil {
		t.Error("OpenRotating without Dir succeeded")
	}
}

func TestRotatingConcurrent(t *testing.T) {
	dir := t.TempDir()
	r := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 2048})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			emitN(r, nil, 50, fmt.Sprint("g", g))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			_ = r.Prev()
			_ = r.Path()
			r.SetLimits(2048, 0)
		}
	}()
	wg.Wait()
	r.Close()
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	res, err := VerifyFiles(listFiles(t, dir)...)
	if err != nil || res.Broken != nil || res.Events != 400 {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestVerifyChain(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	r := openRotating(t, RotatingConfig{Dir: dir, MaxSize: 700, Retention: -1, Now: clock.Now})
	emitN(r, clock, 20, "a")
	r.Close()
	files := listFiles(t, dir)
	if len(files) < 4 {
		t.Fatalf("%d files", len(files))
	}
	lines := func(p string) int {
		b, _ := os.ReadFile(p)
		return strings.Count(string(b), "\n")
	}
	// Given out of order, VerifyFiles sorts; VerifyChain does not.
	rev := append([]string(nil), files...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if res, err := VerifyFiles(rev...); err != nil || res.Broken != nil || res.Events != 20 {
		t.Errorf("VerifyFiles(reversed) = %+v, %v", res, err)
	}
	res, err := VerifyChain([]string{files[1], files[0]})
	if err != nil || res.Broken == nil || res.Broken.File != files[0] || res.Broken.Line != 1 || !strings.Contains(res.Broken.Msg, "last line of "+files[1]) {
		t.Errorf("VerifyChain(swapped) = %+v, %v", res.Broken, err)
	}
	// A missing middle file breaks the chain at the first line of the next.
	res, _ = VerifyChain(append([]string{files[0]}, files[2:]...))
	if res.Broken == nil || res.Broken.File != files[2] || res.Broken.Line != 1 || res.Events != lines(files[0]) {
		t.Errorf("missing file: %+v", res)
	}
	// Starting from the second file is fine: the chain is anchored there.
	res, _ = VerifyChain(files[1:])
	if res.Broken != nil || res.Anchor != lastHash(t, files[0]) || res.Events != 20-lines(files[0]) {
		t.Errorf("anchored: %+v", res)
	}
	// A line changed in the middle of the third file is found there.
	data, _ := os.ReadFile(files[2])
	first := strings.Index(string(data), "\n") + 1
	mod := string(data[:first]) + strings.Replace(string(data[first:]), "example.com", "evil.test", 1)
	os.WriteFile(files[2], []byte(mod), 0o600)
	res, _ = VerifyFiles(files...)
	if res.Broken == nil || res.Broken.File != files[2] || res.Broken.Line != 3 || res.Broken.Error() != fmt.Sprintf("%s:3: %s", files[2], res.Broken.Msg) {
		t.Errorf("changed line: %+v", res.Broken)
	}
	// The last line of a middle file changed: found at the next file's first line.
	os.WriteFile(files[2], data, 0o600)
	data1, _ := os.ReadFile(files[1])
	os.WriteFile(files[1], []byte(strings.Replace(string(data1), `"decision":"allow"`, `"decision":"deny"`, strings.Count(string(data1), "\n"))), 0o600)
	res, _ = VerifyFiles(files...)
	if res.Broken == nil || res.Broken.File != files[1] {
		t.Errorf("changed file: %+v", res.Broken)
	}
	os.WriteFile(files[1], data1, 0o600)
	// Empty files anywhere are allowed.
	empty := filepath.Join(dir, "empty.jsonl")
	os.WriteFile(empty, nil, 0o600)
	if res, err := VerifyChain([]string{empty, files[0], empty, files[1]}); err != nil || res.Broken != nil || res.Files != 4 {
		t.Errorf("with empty files: %+v, %v", res, err)
	}
	if _, err := VerifyChain([]string{filepath.Join(dir, "missing.jsonl")}); err == nil {
		t.Error("missing file: no error")
	}
	if res, err := VerifyChain(nil); err != nil || res.Events != 0 || res.Broken != nil {
		t.Errorf("no files: %+v %v", res, err)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("", "")
	f.Add("{\"prev\":\"\"}\n", "")
	f.Add("{\"type\":\"http\",\"prev\":\"\"}\n{\"prev\":\"x\"}\n", "")
	f.Add("null\n[]\n", "abc")
	f.Fuzz(func(t *testing.T, data, prev string) {
		res, err := Verify(strings.NewReader(data), prev)
		if err != nil {
			t.Fatal(err)
		}
		if res.Broken == nil && res.Lines != strings.Count(data, "\n") {
			t.Fatalf("intact chain of %d lines in %d newlines", res.Lines, strings.Count(data, "\n"))
		}
		if res.Broken != nil && (res.Broken.Line < 1 || res.Broken.Line > res.Lines || res.Broken.Msg == "") {
			t.Fatalf("bad break %+v for %d lines", res.Broken, res.Lines)
		}
	})
}
