package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// FileBreak locates the first line that does not continue a chain of files.
type FileBreak struct {
	File string
	Line int
	Msg  string
}

func (b *FileBreak) Error() string { return fmt.Sprintf("%s:%d: %s", b.File, b.Line, b.Msg) }

// ChainResult is what VerifyChain found.
type ChainResult struct {
	Files  int    // files read
	Events int    // lines that continue the chain
	Last   string // hash of the last line
	// Anchor is the prev of the very first line: "" when the chain starts
	// there, else the hash of a line that is not in the files given (deleted
	// by retention, or simply not passed). Events before it cannot be checked.
	Anchor string
	Broken *FileBreak // nil when the chain is intact
}

// VerifyChain checks files, in the order given, as one hash chain: each
// file's first line carries the hash of the previous file's last line. The
// first file may continue from a file that is not given (see Anchor). Empty
// files are allowed anywhere. Read errors are returned as errors; a broken
// chain is reported in Broken.
func VerifyChain(paths []string) (ChainResult, error) {
	var res ChainResult
	prev, prevFile := "", ""
	started := false
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return res, fmt.Errorf("audit: %w", err)
		}
		r, err := verify(f, prev, !started)
		f.Close()
		if err != nil {
			return res, fmt.Errorf("audit %s: %w", path, err)
		}
		res.Files++
		if r.Lines > 0 && !started {
			started = true
			res.Anchor = r.Anchor
		}
		if r.Broken != nil {
			msg := r.Broken.Msg
			if r.Broken.Line == 1 && prevFile != "" {
				msg = fmt.Sprintf("prev does not match the last line of %s (a file is missing or out of order, or that line was changed)", prevFile)
			}
			res.Events += r.Broken.Line - 1
			res.Broken = &FileBreak{File: path, Line: r.Broken.Line, Msg: msg}
			return res, nil
		}
		res.Events += r.Lines
		if r.Lines > 0 {
			prev, prevFile = r.Last, path
		}
	}
	res.Last = prev
	return res, nil
}

// VerifyFiles checks files as one chain in the order of their names (the
// order Rotating creates them in), whatever order they are given in.
func VerifyFiles(paths ...string) (ChainResult, error) {
	sorted := append([]string(nil), paths...)
	sort.SliceStable(sorted, func(i, j int) bool {
		bi, bj := filepath.Base(sorted[i]), filepath.Base(sorted[j])
		if bi != bj {
			return bi < bj
		}
		return sorted[i] < sorted[j]
	})
	return VerifyChain(sorted)
}
