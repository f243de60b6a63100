package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Rotation defaults.
const (
	DefaultMaxSize   = 64 << 20
	DefaultRetention = 720 * time.Hour
)

// fileTimeLayout is fixed-width, so that names sort in time order.
const fileTimeLayout = "20060102T150405.000000000Z"

// RotatingConfig configures a Rotating sink.
type RotatingConfig struct {
	Dir string // where the audit-<timestamp>.jsonl files live (created 0700)
	// MaxSize starts a new file before a line would take the current one past
	// it (0: DefaultMaxSize). A single larger line still gets a file of its own.
	MaxSize int64
	// Retention deletes a file once every event in it is older than this
	// (0: DefaultRetention; negative: keep everything). The file being
	// written is never deleted.
	Retention time.Duration
	Now       func() time.Time // clock for timestamps, names and retention (default time.Now)
}

// Rotating is a Sink writing one hash chain across a sequence of files
// <dir>/audit-<UTC timestamp>.jsonl. Each file's first line carries the hash
// of the previous file's last line, so VerifyFiles checks the directory as
// one chain; after retention deleted the oldest files the chain starts with
// an Anchor instead of "". It is safe for concurrent use.
type Rotating struct {
	dir string
	now func() time.Time

	mu        sync.Mutex
	maxSize   int64
	retention time.Duration
	f         *os.File
	path      string
	start     time.Time // timestamp in the current file's name
	size      int64
	prev      string
	err       error
	buf       []byte // reused line buffer
}

// ErrBrokenChain is wrapped by OpenRotating when the newest file does not
// verify: it is evidence, and is never extended. Move it aside to continue.
var ErrBrokenChain = errors.New("audit chain is broken")

// OpenRotating opens the newest audit file in cfg.Dir for appending (or starts
// the first one), after verifying it, and deletes files past the retention.
func OpenRotating(cfg RotatingConfig) (*Rotating, error) {
	if cfg.Dir == "" {
		return nil, errors.New("audit: RotatingConfig.Dir is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	r := &Rotating{dir: cfg.Dir, now: cfg.Now}
	if r.now == nil {
		r.now = time.Now
	}
	r.SetLimits(cfg.MaxSize, cfg.Retention)
	files, err := r.files()
	if err != nil {
		return nil, err
	}
	// Resume the chain from the newest file with events in it; the newest
	// file must verify (its first line may continue from an older one).
	for i := len(files) - 1; i >= 0; i-- {
		f, err := os.Open(files[i].path)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		res, err := verify(f, "", true)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("audit %s: %w", files[i].path, err)
		}
		if res.Broken != nil {
			return nil, fmt.Errorf("%w: %s:%d: %s; move the file aside to start a new chain", ErrBrokenChain, files[i].path, res.Broken.Line, res.Broken.Msg)
		}
		if res.Lines > 0 {
			r.prev = res.Last
			break
		}
	}
	if n := len(files); n > 0 {
		last := files[n-1]
		st, err := os.Stat(last.path)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		if st.Size() < r.maxSize {
			f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return nil, fmt.Errorf("audit: %w", err)
			}
			r.f, r.path, r.start, r.size = f, last.path, last.start, st.Size()
		} else {
			r.start = last.start
		}
	}
	if r.f == nil {
		if err := r.create(); err != nil {
			return nil, err
		}
	}
	r.prune()
	return r, nil
}

// SetLimits changes MaxSize and Retention (e.g. on policy reload); zero
// values select the defaults.
func (r *Rotating) SetLimits(maxSize int64, retention time.Duration) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if retention == 0 {
		retention = DefaultRetention
	}
	r.mu.Lock()
	r.maxSize, r.retention = maxSize, retention
	r.mu.Unlock()
}

type auditFile struct {
	path  string
	start time.Time
}

// files lists the directory's audit files, oldest first. Other files are ignored.
func (r *Rotating) files() ([]auditFile, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var out []auditFile
	for _, e := range ents {
		ts, ok := strings.CutPrefix(e.Name(), "audit-")
		if ts, ok2 := strings.CutSuffix(ts, ".jsonl"); ok && ok2 && e.Type().IsRegular() {
			if t, err := time.Parse(fileTimeLayout, ts); err == nil {
				out = append(out, auditFile{filepath.Join(r.dir, e.Name()), t})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// create starts a new file, named for the current time but always after the
// previous file so that names sort in chain order even if the clock steps back.
func (r *Rotating) create() error {
	t := r.now().UTC()
	if !t.After(r.start) {
		t = r.start.Add(time.Nanosecond)
	}
	path := filepath.Join(r.dir, "audit-"+t.Format(fileTimeLayout)+".jsonl")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if r.f != nil {
		r.f.Close()
	}
	r.f, r.path, r.start, r.size = f, path, t, 0
	return nil
}

// Emit writes e, setting TS when zero and Prev always, rotating first when
// the line would take the file past MaxSize.
func (r *Rotating) Emit(e *Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		r.setErr(errors.New("audit: emit on a closed sink"))
		return
	}
	if e.TS.IsZero() {
		e.TS = r.now()
	}
	e.TS = e.TS.UTC()
	e.Prev = r.prev
	line, err := appendEvent(r.buf[:0], e)
	if err != nil {
		r.setErr(err)
		return
	}
	line = append(line, '\n')
	r.buf = keepBuf(line)
	if r.size > 0 && r.size+int64(len(line)) > r.maxSize {
		if err := r.create(); err != nil {
			r.setErr(err) // keep writing to the full file rather than lose events
		} else {
			r.prune()
		}
	}
	if n, err := r.f.Write(line); err != nil {
		// Cut a partial line off, so the file stays a valid chain.
		if n > 0 {
			_ = r.f.Truncate(r.size)
		}
		r.setErr(err)
		return
	}
	r.size += int64(len(line))
	r.prev = HashLine(line[:len(line)-1])
}

func (r *Rotating) setErr(err error) {
	if r.err == nil {
		r.err = err
	}
}

// prune deletes files whose last event is older than the retention: a file
// ends where the next one starts, so it goes once its successor's start is
// past the retention. The newest file is never deleted.
func (r *Rotating) prune() {
	if r.retention < 0 {
		return
	}
	files, err := r.files()
	if err != nil {
		r.setErr(err)
		return
	}
	cut := r.now().Add(-r.retention)
	for i := 0; i+1 < len(files); i++ {
		if files[i].path == r.path || !files[i+1].start.Before(cut) {
			break
		}
		if err := os.Remove(files[i].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.setErr(err)
		}
	}
}

// Err returns the first error writing, rotating or pruning, if any.
func (r *Rotating) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Prev returns the hash the next event will carry.
func (r *Rotating) Prev() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prev
}

// Path returns the file being written.
func (r *Rotating) Path() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.path
}

// Close syncs and closes the current file. Later Emits are recorded in Err.
func (r *Rotating) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := errors.Join(r.f.Sync(), r.f.Close())
	r.f = nil
	return err
}
