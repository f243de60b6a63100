package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
)

// Audit file defaults (policy audit.max_size and audit.retention override).
const (
	defaultMaxSize   = 64 << 20
	defaultRetention = 720 * time.Hour
	currentName      = "cagent.jsonl"
)

// auditFiles writes events to <dir>/cagent.jsonl, a hash chain. When the
// file reaches the size limit it is renamed to cagent-<UTC time>.jsonl and
// a new file starts whose first event names the old file and the hash of
// its last line, so the chain can be followed across files; rotated files
// older than the retention are deleted. Each file verifies on its own with
// `cagent audit verify`.
type auditFiles struct {
	dir string
	now func() time.Time

	mu        sync.Mutex
	sink      *audit.FileSink
	size      int64
	maxSize   int64
	retention time.Duration
}

func openAuditFiles(dir string, p *policy.Policy, now func() time.Time) (*auditFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit directory: %w", err)
	}
	a := &auditFiles{dir: dir, now: now}
	a.setPolicy(p)
	path := filepath.Join(dir, currentName)
	s, err := audit.OpenFile(path)
	if err != nil {
		// A damaged file is kept as evidence, not extended: move it aside.
		aside := filepath.Join(dir, "cagent-damaged-"+now().UTC().Format("20060102T150405.000000000Z")+".jsonl")
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, err
		}
		if s, err = audit.OpenFile(path); err != nil {
			return nil, err
		}
	}
	a.sink = s
	if st, err := os.Stat(path); err == nil {
		a.size = st.Size()
	}
	a.sink.OnWrite = func(line []byte) { a.size += int64(len(line)) + 1 }
	a.prune()
	return a, nil
}

// setPolicy takes the size limit and retention from the running policy.
func (a *auditFiles) setPolicy(p *policy.Policy) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.maxSize, a.retention = defaultMaxSize, defaultRetention
	if p != nil && p.Audit.MaxSize > 0 {
		a.maxSize = int64(p.Audit.MaxSize)
	}
	if p != nil && p.Audit.Retention > 0 {
		a.retention = p.Audit.Retention.D()
	}
}

// Emit writes e, rotating first when the file is full.
func (a *auditFiles) Emit(e *audit.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sink == nil {
		return
	}
	if a.size >= a.maxSize {
		a.rotate()
	}
	a.sink.Emit(e)
}

func (a *auditFiles) rotate() {
	last := a.sink.Prev()
	_ = a.sink.Close()
	path := filepath.Join(a.dir, currentName)
	name := "cagent-" + a.now().UTC().Format("20060102T150405.000000000Z") + ".jsonl"
	if err := os.Rename(path, filepath.Join(a.dir, name)); err != nil {
		// Keep writing to the same file rather than lose events.
		if s, oerr := audit.OpenFile(path); oerr == nil {
			a.sink = s
			a.sink.OnWrite = func(line []byte) { a.size += int64(len(line)) + 1 }
		}
		return
	}
	s, err := audit.OpenFile(path)
	if err != nil {
		a.sink = nil
		return
	}
	a.sink, a.size = s, 0
	a.sink.OnWrite = func(line []byte) { a.size += int64(len(line)) + 1 }
	a.sink.Emit(&audit.Event{TS: a.now(), Type: audit.TypeAdmin, Action: "audit_rotate",
		Detail: map[string]string{"previous_file": name, "previous_last_hash": last}})
	go a.prune()
}

// prune deletes rotated files older than the retention.
func (a *auditFiles) prune() {
	a.mu.Lock()
	ret := a.retention
	a.mu.Unlock()
	files, _ := filepath.Glob(filepath.Join(a.dir, "cagent-*.jsonl"))
	sort.Strings(files)
	cut := a.now().Add(-ret)
	for _, f := range files {
		if strings.HasSuffix(f, currentName) {
			continue
		}
		if st, err := os.Stat(f); err == nil && st.ModTime().Before(cut) {
			_ = os.Remove(f)
		}
	}
}

func (a *auditFiles) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sink == nil {
		return nil
	}
	err := a.sink.Close()
	a.sink = nil
	return err
}
