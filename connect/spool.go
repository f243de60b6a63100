package connect

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cagent-dev/cagent/internal/atomicfile"
)

// Spool is an on-disk queue of audit events waiting to be shipped to the
// control plane. Every event gets the next sequence number of the spool;
// the control plane stores (spool id, sequence number) as an idempotency
// key, so an event sent twice (a lost acknowledgement) is stored once, and
// an event is deleted here only after the control plane acknowledged it.
//
// Layout (directory 0700, files 0600):
//
//	id                     random spool id (hex), created once
//	acked                  the last acknowledged sequence number
//	<first seq, 20 digits>.log  segments of "SEQ JSON\n" lines
//
// Appends are single write(2) calls without fsync: a crash of this process
// loses nothing (the page cache has it); a power loss may lose the tail.
type Spool struct {
	dir      string
	id       string
	segBytes int64
	maxBytes int64

	mu      sync.Mutex
	next    uint64 // sequence number of the next append
	acked   uint64
	cur     *os.File
	curSize int64
	segs    []segment // oldest first; the last one is cur
	dropped uint64
	notify  chan struct{}
	closed  bool
}

type segment struct {
	first uint64
	size  int64
}

// Spool defaults.
const (
	DefaultSegmentBytes = 4 << 20
	DefaultSpoolBytes   = 256 << 20
)

// OpenSpool opens or creates the spool in dir. maxBytes bounds its size
// (0: DefaultSpoolBytes); beyond it the oldest unshipped segment is
// dropped and counted (Dropped) rather than filling the disk.
func OpenSpool(dir string, maxBytes int64) (*Spool, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultSpoolBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{dir: dir, segBytes: min(DefaultSegmentBytes, maxBytes/4+1), maxBytes: maxBytes, notify: make(chan struct{}, 1)}
	id, err := os.ReadFile(filepath.Join(dir, "id"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		b := make([]byte, 16)
		rand.Read(b)
		id = []byte(hex.EncodeToString(b))
		if err := atomicfile.WriteFile(filepath.Join(dir, "id"), id, 0o600); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("spool: %w", err)
	}
	s.id = strings.TrimSpace(string(id))
	if b, err := os.ReadFile(filepath.Join(dir, "acked")); err == nil {
		s.acked, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("spool: acked: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("spool: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		s.segs = append(s.segs, segment{first: first, size: fi.Size()})
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].first < s.segs[j].first })
	s.next = s.acked + 1
	if n := len(s.segs); n > 0 {
		last, size, err := repairTail(s.segPath(s.segs[n-1].first))
		if err != nil {
			return nil, err
		}
		s.segs[n-1].size = size
		if last >= s.next {
			s.next = last + 1
		} else if s.segs[n-1].first > s.next {
			s.next = s.segs[n-1].first
		}
	}
	s.gcLocked()
	return s, nil
}

func (s *Spool) segPath(first uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d.log", first))
}

// repairTail returns the last sequence number in a segment, truncating a
// torn last line (a crash in the middle of a write).
func repairTail(path string) (uint64, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	good := bytes.LastIndexByte(b, '\n') + 1
	if good < len(b) {
		if err := os.Truncate(path, int64(good)); err != nil {
			return 0, 0, err
		}
	}
	b = b[:good]
	var last uint64
	if good > 0 {
		line := b[:good-1]
		if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
			line = line[i+1:]
		}
		sp := bytes.IndexByte(line, ' ')
		if sp > 0 {
			last, _ = strconv.ParseUint(string(line[:sp]), 10, 64)
		}
	}
	return last, int64(good), nil
}

// ID is the spool's id, part of every event's idempotency key.
func (s *Spool) ID() string { return s.id }

// Notify is signalled after appends.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Append adds one event (a JSON object without newlines) and returns its
// sequence number.
func (s *Spool) Append(event []byte) (uint64, error) {
	if bytes.IndexByte(event, '\n') >= 0 {
		return 0, errors.New("spool: event contains a newline")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.New("spool: closed")
	}
	if s.cur == nil || s.curSize >= s.segBytes {
		if err := s.rotateLocked(); err != nil {
			return 0, err
		}
	}
	seq := s.next
	line := make([]byte, 0, len(event)+24)
	line = strconv.AppendUint(line, seq, 10)
	line = append(line, ' ')
	line = append(line, event...)
	line = append(line, '\n')
	if _, err := s.cur.Write(line); err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	s.next++
	s.curSize += int64(len(line))
	s.segs[len(s.segs)-1].size = s.curSize
	s.gcLocked()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return seq, nil
}

func (s *Spool) rotateLocked() error {
	if s.cur != nil {
		_ = s.cur.Sync()
		_ = s.cur.Close()
		s.cur = nil
	}
	// Reopen the newest segment if it has room (after a restart).
	if n := len(s.segs); n > 0 && s.segs[n-1].size < s.segBytes {
		f, err := os.OpenFile(s.segPath(s.segs[n-1].first), os.O_WRONLY|os.O_APPEND, 0o600)
		if err == nil {
			s.cur, s.curSize = f, s.segs[n-1].size
			return nil
		}
	}
	f, err := os.OpenFile(s.segPath(s.next), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.cur, s.curSize = f, 0
	s.segs = append(s.segs, segment{first: s.next})
	return nil
}

// gcLocked deletes fully acknowledged segments, and the oldest segments
// beyond the size bound.
func (s *Spool) gcLocked() {
	var total int64
	for _, g := range s.segs {
		total += g.size
	}
	for len(s.segs) > 1 {
		g, nextFirst := s.segs[0], s.segs[1].first
		acked := nextFirst-1 <= s.acked
		if !acked && total <= s.maxBytes {
			break
		}
		if !acked {
			s.dropped += nextFirst - max(g.first, s.acked+1)
			s.acked = nextFirst - 1
			_ = atomicfile.WriteFile(filepath.Join(s.dir, "acked"), []byte(strconv.FormatUint(s.acked, 10)), 0o600)
		}
		_ = os.Remove(s.segPath(g.first))
		total -= g.size
		s.segs = s.segs[1:]
	}
}

// Read returns up to maxN events from sequence number from on (at most
// about maxBytes), and the sequence number of the first. Events older than
// the acknowledged ones are never returned.
func (s *Spool) Read(from uint64, maxN, maxBytes int) (uint64, []json.RawMessage, error) {
	s.mu.Lock()
	if from <= s.acked {
		from = s.acked + 1
	}
	next := s.next
	var firsts []uint64
	for i, g := range s.segs {
		end := next
		if i+1 < len(s.segs) {
			end = s.segs[i+1].first
		}
		if end > from {
			firsts = append(firsts, g.first)
		}
	}
	s.mu.Unlock()
	var out []json.RawMessage
	size := 0
	first := uint64(0)
	for _, f := range firsts {
		fh, err := os.Open(s.segPath(f))
		if errors.Is(err, os.ErrNotExist) {
			continue // acknowledged and deleted meanwhile
		}
		if err != nil {
			return 0, nil, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Bytes()
			sp := bytes.IndexByte(line, ' ')
			if sp <= 0 {
				continue
			}
			seq, err := strconv.ParseUint(string(line[:sp]), 10, 64)
			if err != nil || seq < from || seq >= next {
				continue
			}
			if first != 0 && seq != first+uint64(len(out)) {
				// A gap (dropped segment): a batch is consecutive.
				fh.Close()
				return first, out, nil
			}
			if first == 0 {
				first = seq
			}
			out = append(out, json.RawMessage(bytes.Clone(line[sp+1:])))
			size += len(line)
			if len(out) >= maxN || size >= maxBytes {
				fh.Close()
				return first, out, nil
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return 0, nil, err
		}
	}
	return first, out, nil
}

// Ack records that every event up to last was stored by the control plane.
func (s *Spool) Ack(last uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last <= s.acked {
		return nil
	}
	if last >= s.next {
		last = s.next - 1
	}
	s.acked = last
	if err := atomicfile.WriteFile(filepath.Join(s.dir, "acked"), []byte(strconv.FormatUint(last, 10)), 0o600); err != nil {
		return err
	}
	s.gcLocked()
	return nil
}

// Pending is the number of events not acknowledged yet.
func (s *Spool) Pending() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next - 1 - s.acked
}

// Acked is the last acknowledged sequence number.
func (s *Spool) Acked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// Dropped counts events deleted unshipped because the spool was full.
func (s *Spool) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Close flushes and closes the current segment.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.cur == nil {
		return nil
	}
	err := s.cur.Sync()
	err = errors.Join(err, s.cur.Close())
	s.cur = nil
	return err
}
