// Package audit writes and verifies Cagent's audit log: one JSON object per
// line, each carrying prev, the hex SHA-256 of the previous line, so that a
// file is a hash chain and any edit, deletion or reordering is detectable.
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Event types.
const (
	TypeHTTP    = "http"
	TypeConnect = "connect"
	TypeDNS     = "dns"
	TypeSandbox = "sandbox"
	TypeCommand = "command"
	TypeAdmin   = "admin"
)

// Decisions.
const (
	Allow  = "allow"
	Deny   = "deny"
	Report = "report" // allowed in report mode; would have been denied
)

// Event is one audit record (design.md section 6). Field names are constant
// so that logs can be queried across versions. Secrets never go in an event:
// Credential holds the credential's name, never its value.
type Event struct {
	TS       time.Time `json:"ts"`
	Type     string    `json:"type"`
	Agent    string    `json:"agent,omitempty"`
	Decision string    `json:"decision,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Rule     string    `json:"rule,omitempty"`
	Error    string    `json:"error,omitempty"` // decision code, e.g. destination_not_allowed

	// HTTP and CONNECT.
	Method      string `json:"method,omitempty"`
	Scheme      string `json:"scheme,omitempty"`
	Host        string `json:"host,omitempty"`
	Port        int    `json:"port,omitempty"`
	Path        string `json:"path,omitempty"`
	Status      int    `json:"status,omitempty"`
	BytesUp     int64  `json:"bytes_up,omitempty"`
	BytesDown   int64  `json:"bytes_down,omitempty"`
	DurationMS  int64  `json:"duration_ms,omitempty"`
	Intercepted bool   `json:"intercepted,omitempty"`
	Credential  string `json:"credential,omitempty"`
	Client      string `json:"client,omitempty"`
	Upstream    string `json:"upstream,omitempty"` // the address dialed

	// DNS.
	QName  string   `json:"qname,omitempty"`
	QType  string   `json:"qtype,omitempty"`
	RCode  string   `json:"rcode,omitempty"`
	Answer []string `json:"answer,omitempty"`

	// Sandbox, command and admin events.
	Action string            `json:"action,omitempty"`
	Actor  string            `json:"actor,omitempty"`
	Detail map[string]string `json:"detail,omitempty"`

	Prev string `json:"prev"`
}

// Sink receives events. Implementations must be safe for concurrent use.
type Sink interface {
	Emit(e *Event)
}

// Discard drops every event.
var Discard Sink = discard{}

type discard struct{}

func (discard) Emit(*Event) {}

// Multi sends each event to every sink.
func Multi(sinks ...Sink) Sink { return multi(sinks) }

type multi []Sink

func (m multi) Emit(e *Event) {
	for _, s := range m {
		c := *e
		s.Emit(&c)
	}
}

// Writer appends events to a hash-chained JSON-lines stream. It is safe for
// concurrent use; events are chained in the order Emit is called.
type Writer struct {
	mu   sync.Mutex
	w    io.Writer
	prev string
	now  func() time.Time
	err  error
	buf  []byte // reused line buffer, under mu
	// OnWrite, if set, is called with each line written (without newline), under the lock.
	OnWrite func(line []byte)
}

// NewWriter chains onto prev (the hash of the last line already in w, "" for a new stream).
func NewWriter(w io.Writer, prev string, now func() time.Time) *Writer {
	if now == nil {
		now = time.Now
	}
	return &Writer{w: w, prev: prev, now: now}
}

// Emit writes e, setting TS when zero and Prev always.
func (w *Writer) Emit(e *Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.TS.IsZero() {
		e.TS = w.now()
	}
	e.TS = e.TS.UTC()
	e.Prev = w.prev
	line, err := appendEvent(w.buf[:0], e)
	if err != nil {
		w.err = err
		return
	}
	line = append(line, '\n')
	w.buf = keepBuf(line)
	if _, err := w.w.Write(line); err != nil {
		w.err = err
		return
	}
	w.prev = HashLine(line[:len(line)-1])
	if w.OnWrite != nil {
		w.OnWrite(line[:len(line)-1])
	}
}

// Err returns the first write error, if any.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Prev returns the hash the next event will carry.
func (w *Writer) Prev() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.prev
}

// keepBuf returns b for reuse, unless it grew past what one burst needs.
func keepBuf(b []byte) []byte {
	if cap(b) > 1<<20 {
		return nil
	}
	return b[:0]
}

// HashLine is the chain hash of one line (without its newline).
func HashLine(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// FileSink is a Writer on an append-only file that resumes the chain of the
// lines already in it.
type FileSink struct {
	*Writer
	f *os.File
}

// OpenFile opens (creating, mode 0600) an audit file for appending. An
// existing file is verified first; a broken chain is refused, not extended.
func OpenFile(path string) (*FileSink, error) {
	prev := ""
	if f, err := os.Open(path); err == nil {
		res, where, verr := verifyTail(f, tailCheck)
		f.Close()
		if verr != nil {
			return nil, fmt.Errorf("audit log %s: %w", path, verr)
		}
		if res.Broken != nil {
			return nil, fmt.Errorf("audit log %s: %v%s; move it aside before appending", path, res.Broken, where)
		}
		prev = res.Last
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return &FileSink{Writer: NewWriter(f, prev, nil), f: f}, nil
}

// tailCheck is how much of an existing log OpenFile verifies before it
// appends: a log that many runs extend (a named agent's `cagent run` log)
// would otherwise make every start read all of it. `cagent audit verify`
// checks whole files.
const tailCheck = 256 << 10

// verifyTail verifies the last n bytes of f from its first whole line
// (whose prev is taken on trust), or all of f when it is not larger. where
// says which part a Break's line number counts in.
func verifyTail(f *os.File, n int64) (res Result, where string, err error) {
	st, err := f.Stat()
	if err != nil {
		return res, "", err
	}
	if st.Size() <= n {
		res, err = Verify(f, "")
		return res, "", err
	}
	off := st.Size() - n
	br := bufio.NewReader(io.NewSectionReader(f, off, n))
	skipped, err := br.ReadBytes('\n') // the line the window starts inside
	if err == nil {
		res, err = verify(br, "", true)
		if err != nil || res.Lines > 0 {
			return res, fmt.Sprintf(" (counting from byte %d)", off+int64(len(skipped))), err
		}
	}
	// The last line is longer than the window: check the whole file.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return res, "", err
	}
	res, err = Verify(f, "")
	return res, "", err
}

// Close closes the file.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

// Break describes the first line that does not continue the chain.
type Break struct {
	Line int
	Msg  string
}

func (b *Break) Error() string { return fmt.Sprintf("line %d: %s", b.Line, b.Msg) }

// Result is what Verify found.
type Result struct {
	Lines  int
	Last   string // hash of the last line
	Broken *Break // nil when the chain is intact
	Anchor string // prev of the first line, when it was not checked (see VerifyChain)
}

// Verify reads a chain. prev is the hash the first line must carry ("" for
// the first file of a chain; rotated files continue from the previous file's
// Last). It reports the first broken line; read errors are returned as errors.
func Verify(r io.Reader, prev string) (Result, error) {
	return verify(r, prev, false)
}

// verify checks one stream. With anchored, the first line may carry any prev
// (the chain continues from a file that is not being checked).
func verify(r io.Reader, prev string, anchored bool) (Result, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	res := Result{Last: prev}
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			res.Lines++
			if line[len(line)-1] != '\n' {
				res.Broken = &Break{res.Lines, "truncated line (no newline at the end)"}
				return res, nil
			}
			line = bytes.TrimSuffix(line, []byte{'\n'})
			var ev struct {
				Prev *string `json:"prev"`
			}
			if len(line) == 0 {
				res.Broken = &Break{res.Lines, "empty line"}
				return res, nil
			}
			if jerr := json.Unmarshal(line, &ev); jerr != nil {
				res.Broken = &Break{res.Lines, "not a JSON object: " + jerr.Error()}
				return res, nil
			}
			if ev.Prev == nil {
				res.Broken = &Break{res.Lines, "no prev field"}
				return res, nil
			}
			switch {
			case res.Lines == 1 && anchored:
				res.Anchor = *ev.Prev
			case *ev.Prev == res.Last:
			case res.Lines == 1:
				res.Broken = &Break{1, "prev does not match the hash the chain expects here (the first line was changed, or lines before it were removed)"}
				return res, nil
			default:
				res.Broken = &Break{res.Lines, fmt.Sprintf("prev does not match the hash of line %d (line %d was changed, or lines were removed, inserted or reordered here)", res.Lines-1, res.Lines-1)}
				return res, nil
			}
			res.Last = HashLine(line)
		}
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
	}
}
