package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// ErrAmbiguousPath is returned for paths whose meaning depends on how the
// upstream decodes them (%2F, %5C, %00, double encoding). Covered paths with
// such encodings are refused, not guessed.
var ErrAmbiguousPath = errors.New("ambiguous path encoding")

// NormalizePath turns the escaped path of a request (no query string) into the
// form path rules are matched against: percent-decoded, duplicate slashes
// collapsed, dot segments resolved. It refuses encodings whose meaning differs
// between servers: encoded slash or backslash, NUL, control characters,
// invalid escapes, and escapes that decode to another escape (double encoding).
func NormalizePath(escaped string) (string, error) {
	if escaped == "" || escaped == "*" {
		return "/", nil
	}
	if escaped[0] != '/' {
		return "", fmt.Errorf("%w: path must start with /", ErrAmbiguousPath)
	}
	var b strings.Builder
	b.Grow(len(escaped))
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch {
		case c == '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return "", fmt.Errorf("%w: invalid escape", ErrAmbiguousPath)
			}
			v := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			switch {
			case v == '/' || v == '\\':
				return "", fmt.Errorf("%w: encoded slash", ErrAmbiguousPath)
			case v == 0 || v < 0x20 || v == 0x7f:
				return "", fmt.Errorf("%w: encoded control character", ErrAmbiguousPath)
			case v == '%':
				return "", fmt.Errorf("%w: double encoding", ErrAmbiguousPath)
			}
			b.WriteByte(v)
			i += 2
		case c == '\\':
			return "", fmt.Errorf("%w: backslash", ErrAmbiguousPath)
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: control character", ErrAmbiguousPath)
		default:
			b.WriteByte(c)
		}
	}
	if !utf8.ValidString(b.String()) {
		// Overlong forms ("%c0%af" for "/") and stray bytes: lenient
		// decoders turn them into separators or dots.
		return "", fmt.Errorf("%w: invalid UTF-8", ErrAmbiguousPath)
	}
	return cleanSegments(b.String())
}

// cleanSegments collapses empty segments and resolves "." and ".." (never
// above root). A path that ends in a directory ("/x/", "/x/.", "/x/y/..")
// keeps its trailing slash so that it matches "/x/" rules. A dot segment
// with path parameters ("..;x", Tomcat and Jetty resolve it as "..") is
// refused: servers disagree on it.
func cleanSegments(p string) (string, error) {
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	dir := false
	for _, s := range segs {
		dir = true
		switch s {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		if base, _, ok := strings.Cut(s, ";"); ok && (base == "." || base == "..") {
			return "", fmt.Errorf("%w: dot segment with parameters", ErrAmbiguousPath)
		}
		out = append(out, s)
		dir = false
	}
	res := "/" + strings.Join(out, "/")
	if dir && res != "/" {
		res += "/"
	}
	return res, nil
}

// trimSegments removes trailing dots and spaces from every segment, the way
// Windows servers see a path ("/admin./x " is "/admin/x"). A segment of only
// dots or spaces is kept as it is.
func trimSegments(p string) string {
	if !strings.Contains(p, ".") && !strings.Contains(p, " ") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if t := strings.TrimRight(s, ". "); t != "" {
			segs[i] = t
		}
	}
	return strings.Join(segs, "/")
}

// stripParams removes ";params" from every segment of a normalized path, the
// way servers that support path parameters see it ("/admin;x=1" is "/admin").
func stripParams(p string) string {
	if !strings.Contains(p, ";") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i], _, _ = strings.Cut(s, ";")
	}
	return strings.Join(segs, "/")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// pathRule is one allowed_paths or denied_paths pattern.
type pathRule struct {
	pattern string // as written, reported as the rule
	value   string // normalized, without the trailing '*'
	lower   string // value in lower case, for denied_paths
	prefix  bool
}

func parsePathRule(raw string) (pathRule, error) {
	if !strings.HasPrefix(raw, "/") {
		return pathRule{}, fmt.Errorf("path pattern %q must start with /", raw)
	}
	v, prefix := strings.CutSuffix(raw, "*")
	if strings.Contains(v, "*") {
		return pathRule{}, fmt.Errorf("path pattern %q: '*' is allowed only at the end", raw)
	}
	if strings.ContainsAny(v, "?#") {
		return pathRule{}, fmt.Errorf("path pattern %q: query strings and fragments are not matched", raw)
	}
	n, err := NormalizePath(v)
	if err != nil {
		return pathRule{}, fmt.Errorf("path pattern %q: %v", raw, err)
	}
	// Keep a trailing slash that NormalizePath would keep anyway ("/x/*").
	if strings.HasSuffix(v, "/") && !strings.HasSuffix(n, "/") {
		n += "/"
	}
	return pathRule{pattern: raw, value: n, lower: strings.ToLower(n), prefix: prefix}, nil
}

// allows reports whether an allowed_paths rule admits the normalized path p.
// Matching is exact in case; "/v1/models" also admits "/v1/models/" (the
// same resource to most servers).
func (r pathRule) allows(p string) bool {
	v := r.value
	if r.prefix {
		return strings.HasPrefix(p, v)
	}
	return p == v || (!strings.HasSuffix(v, "/") && p == v+"/")
}

// denies reports whether a denied_paths rule covers the normalized path p.
// It errs on the side of covering: case is folded (many servers ignore it),
// path parameters are ignored ("/admin;x" is "/admin" to Java servers), a
// trailing slash does not matter, and "/x/*" also covers "/x" itself.
func (r pathRule) denies(p string) bool {
	v := r.lower
	low := strings.ToLower(p)
	for _, q := range []string{low, stripParams(low), trimSegments(stripParams(low))} {
		if r.prefix {
			if strings.HasPrefix(q, v) || (strings.HasSuffix(v, "/") && q == strings.TrimSuffix(v, "/")) {
				return true
			}
			continue
		}
		if strings.TrimSuffix(q, "/") == strings.TrimSuffix(v, "/") {
			return true
		}
	}
	return false
}

// CheckPath decides a request path (escaped form, no query) against the
// entry's path rules. It returns the rule that decided ("" when the entry has
// no path rules) and whether the path is allowed. Denied patterns match
// case-insensitively and allowed ones case-sensitively, so a server that folds
// case can never widen what is allowed.
func (d *Domain) CheckPath(escaped string) (allowed bool, rule string, err error) {
	if len(d.allowed) == 0 && len(d.denied) == 0 {
		return true, "", nil
	}
	p, err := NormalizePath(escaped)
	if err != nil {
		return false, "", err
	}
	// Servers that apply Unicode compatibility folding see fullwidth
	// "／ａｄｍｉｎ" as "/admin" and "．．" as "..": the path must pass the
	// rules in that form too.
	folded, err := foldCompat(p)
	if err != nil {
		return false, "", err
	}
	for _, r := range d.denied {
		if r.denies(p) || folded != "" && r.denies(folded) {
			return false, "denied_paths " + r.pattern, nil
		}
	}
	if len(d.allowed) == 0 {
		return true, "", nil
	}
	for _, r := range d.allowed {
		if r.allows(p) && (folded == "" || r.allows(folded)) {
			return true, "allowed_paths " + r.pattern, nil
		}
	}
	return false, "allowed_paths", nil
}

// foldCompat returns the NFKC form of a normalized path with its dot
// segments resolved again, or "" when folding does not change it (every
// ASCII path).
func foldCompat(p string) (string, error) {
	ascii := true
	for i := 0; i < len(p); i++ {
		if p[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return "", nil
	}
	f := norm.NFKC.String(p)
	if f == p {
		return "", nil
	}
	// A raw path never holds '%' here (NormalizePath refuses double
	// encoding), so a folded one ("％２ｆ") would be decoded a second time.
	if strings.ContainsAny(f, "%\\") || strings.ContainsFunc(f, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("%w: folds to a percent sign, backslash or control character", ErrAmbiguousPath)
	}
	return cleanSegments(f)
}

// HasPathRules reports whether the entry restricts paths.
func (d *Domain) HasPathRules() bool { return len(d.allowed) > 0 || len(d.denied) > 0 }
