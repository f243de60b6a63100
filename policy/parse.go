package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds the policy file; a larger one is refused before parsing.
const MaxFileSize = 4 << 20

// maxNodes bounds the number of YAML nodes visited, so alias expansion
// ("billion laughs") cannot make parsing unbounded.
const maxNodes = 200000

// Error is one problem found in a policy, with its position when known.
type Error struct {
	File string
	Line int
	Col  int
	Path string // field path, e.g. domains[2].timeout
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d:", e.Line, e.Col)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a policy, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Pos is a 1-based position in the policy source.
type Pos struct{ Line, Col int }

type positions map[string]Pos

// ParseFile reads, parses and validates a policy file.
func ParseFile(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse parses and validates a policy. file names the source in errors.
// On failure the error is an Errors listing every problem found.
func Parse(file string, data []byte) (*Policy, error) {
	if len(data) > MaxFileSize {
		return nil, Errors{{File: file, Msg: "policy file larger than 4 MiB"}}
	}
	p := &Policy{file: file, pos: positions{}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, Errors{yamlSyntaxError(file, data, err)}
	}
	// A second document would be silently ignored; refuse it instead. An
	// empty one (a trailing "---") is harmless.
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, Errors{yamlSyntaxError(file, data, err)}
		}
		if len(extra.Content) == 1 && extra.Content[0].Kind == yaml.ScalarNode && extra.Content[0].Tag == "!!null" && extra.Content[0].Value == "" {
			continue
		}
		return nil, Errors{{File: file, Line: extra.Line, Col: extra.Column, Msg: "more than one YAML document; a policy is one document"}}
	}
	d := &decoder{file: file, pos: p.pos}
	if len(doc.Content) > 0 {
		d.decode(doc.Content[0], reflect.ValueOf(p).Elem(), "")
	}
	// Validate even when decoding failed, so one run reports every problem;
	// skip findings on fields that already failed to decode.
	errs := d.errs
	var verrs Errors
	if err := p.Validate(); err != nil {
		errors.As(err, &verrs)
	}
	for _, ve := range verrs {
		if !coveredBy(ve.Path, d.errs) {
			errs = append(errs, ve)
		}
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, errs
	}
	return p, nil
}

func yamlSyntaxError(file string, data []byte, err error) *Error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	e := &Error{File: file, Msg: "invalid YAML: " + msg}
	// yaml.v3 syntax errors read "yaml: line N: ..." (no column).
	if strings.HasPrefix(msg, "line ") {
		rest := msg[len("line "):]
		if i := strings.Index(rest, ":"); i > 0 {
			if n, convErr := strconv.Atoi(rest[:i]); convErr == nil {
				e.Line, e.Col = n, 1
				e.Msg = "invalid YAML: " + strings.TrimSpace(rest[i+1:])
			}
		}
	}
	if e.Line == 0 {
		// Reader errors carry no position, and yaml.v3 omits "line 1".
		e.Line, e.Col = badBytePos(data)
	} else {
		e.Line = problemLine(data, e.Line)
	}
	return e
}

// problemLine finds the line a syntax error is on. yaml.v3 reports the line
// where the enclosing block or flow collection starts, which can be far above
// the mistake; the first line whose inclusion makes the text fail to parse is
// a better answer. It binary-searches prefixes, so it costs O(log n) parses.
func problemLine(data []byte, from int) int {
	starts := []int{0} // byte offset of each line
	for i, c := range data {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	prefix := func(lines int) []byte {
		if lines >= len(starts) {
			return data
		}
		return data[:starts[lines]]
	}
	lo, hi := from, len(starts) // the first `from-1` lines parse; all of them fail
	if lo < 1 || lo > hi || !yamlFails(prefix(hi)) {
		return from
	}
	if !yamlFails(prefix(lo - 1)) {
		for lo < hi {
			mid := (lo + hi) / 2
			if yamlFails(prefix(mid)) {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		return lo
	}
	return from
}

func yamlFails(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil {
			return true
		}
	}
}

// badBytePos returns the position of the first byte YAML cannot read (invalid
// UTF-8 or a control character), or 1:1 when there is none. Columns count bytes.
func badBytePos(data []byte) (line, col int) {
	line, start := 1, 0
	for i := 0; i < len(data); {
		c := data[i]
		if c == '\n' {
			line, start = line+1, i+1
			i++
			continue
		}
		if c < 0x20 && c != '\t' && c != '\r' || c == 0x7f {
			return line, i - start + 1
		}
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return line, i - start + 1
		}
		i += size
	}
	return 1, 1
}

func sortErrors(es Errors) {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Col < es[j].Col
	})
}

// nodeDecoder is implemented by scalar types with their own YAML syntax.
type nodeDecoder interface {
	decodeNode(n *yaml.Node) error
}

type decoder struct {
	file  string
	pos   positions
	errs  Errors
	nodes int
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Col: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.nodes++
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.errorf(n, path, "document too large or too deeply aliased")
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if path != "" {
		d.pos[path] = Pos{n.Line, n.Column}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // absent: keep the zero value
	}
	if v.CanAddr() {
		if nd, ok := v.Addr().Interface().(nodeDecoder); ok {
			if n.Kind != yaml.ScalarNode {
				d.errorf(n, path, "expected a scalar value, got %s", kindName(n))
				return
			}
			if err := nd.decodeNode(n); err != nil {
				d.errorf(n, path, "%v", err)
			}
			return
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		d.decode(n, nv.Elem(), path)
		v.Set(nv)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "expected a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errorf(n, path, "expected a mapping, got %s", kindName(n))
			return
		}
		m := reflect.MakeMap(v.Type())
		pairs := d.pairs(n, path, 0)
		for i := 0; i+1 < len(pairs); i += 2 {
			k, val := pairs[i], pairs[i+1]
			if k.Kind != yaml.ScalarNode {
				d.errorf(k, path, "keys must be strings")
				continue
			}
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				d.errorf(k, path, "duplicate key %q", k.Value)
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, ev, path+"."+k.Value)
			m.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(m)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "expected a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			d.errorf(n, path, "expected true or false, got %q", n.Value)
			return
		}
		b, _ := strconv.ParseBool(strings.ToLower(n.Value))
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			d.errorf(n, path, "expected an integer, got %q", n.Value)
			return
		}
		i, err := strconv.ParseInt(n.Value, 0, 64)
		if err != nil {
			d.errorf(n, path, "integer out of range: %q", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			d.errorf(n, path, "expected a number, got %q", n.Value)
			return
		}
		var f float64
		var err error
		if n.Tag == "!!int" {
			// The same integer forms as integer fields: 0x10, 0o17, 1_000.
			var i int64
			i, err = strconv.ParseInt(n.Value, 0, 64)
			f = float64(i)
		} else {
			f, err = strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		}
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			d.errorf(n, path, "invalid number %q", n.Value)
			return
		}
		v.SetFloat(f)
	default:
		d.errorf(n, path, "unsupported field type %s", v.Type())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]bool{}
	pairs := d.pairs(n, path, 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		k, val := pairs[i], pairs[i+1]
		kp := k.Value
		if path != "" {
			kp = path + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be strings")
			continue
		}
		idx, ok := fields[k.Value]
		if !ok {
			d.errorf(k, kp, "unknown key %q%s", k.Value, suggest(k.Value, fields))
			continue
		}
		if seen[k.Value] {
			d.errorf(k, kp, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		d.decode(val, v.Field(idx), kp)
	}
}

// pairs returns the key/value nodes of mapping n with YAML merge keys
// ("<<: *base") expanded: keys written in n win over merged ones, and earlier
// merged mappings win over later ones.
func (d *decoder) pairs(n *yaml.Node, path string, depth int) []*yaml.Node {
	hasMerge := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		if isMergeKey(n.Content[i]) {
			hasMerge = true
		}
	}
	if !hasMerge {
		return n.Content
	}
	// Merging aliases can multiply work like alias expansion does.
	d.nodes += len(n.Content)
	if d.nodes > maxNodes {
		if d.nodes-len(n.Content) <= maxNodes {
			d.errorf(n, path, "document too large or too deeply aliased")
		}
		return nil
	}
	var out, merged []*yaml.Node
	own := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !isMergeKey(k) {
			out = append(out, k, val)
			own[k.Value] = true
			continue
		}
		if depth > 16 {
			d.errorf(k, path, "merge keys nested too deeply")
			continue
		}
		if val.Kind == yaml.AliasNode {
			val = val.Alias
		}
		srcs := []*yaml.Node{val}
		if val.Kind == yaml.SequenceNode {
			srcs = val.Content
		}
		for _, src := range srcs {
			if src.Kind == yaml.AliasNode {
				src = src.Alias
			}
			if src.Kind != yaml.MappingNode {
				d.errorf(src, path, "<< must merge a mapping or a list of mappings, got %s", kindName(src))
				continue
			}
			merged = append(merged, d.pairs(src, path, depth+1)...)
		}
	}
	for i := 0; i+1 < len(merged); i += 2 {
		k := merged[i]
		if k.Kind == yaml.ScalarNode && !own[k.Value] {
			own[k.Value] = true
			out = append(out, k, merged[i+1])
		}
	}
	return out
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Tag == "!!merge"
}

// yamlFields maps yaml tag names to field indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = i
	}
	return m
}

// suggest names the closest known key when the unknown one is a likely typo.
func suggest(key string, fields map[string]int) string {
	best, bestD := "", 3
	for name := range fields {
		if dd := editDistance(key, name); dd < bestD || (dd == bestD && name < best) {
			best, bestD = name, dd
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// coveredBy reports whether path, or a field it belongs to, already has an error.
func coveredBy(path string, errs Errors) bool {
	for _, e := range errs {
		if e.Path != "" && (path == e.Path || strings.HasPrefix(path, e.Path+".") || strings.HasPrefix(path, e.Path+"[")) {
			return true
		}
	}
	return false
}
