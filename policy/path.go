package policy

import (
	"errors"
	"fmt"
	"strings"
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
	return cleanSegments(b.String()), nil
}

// cleanSegments collapses empty segments and resolves "." and ".." (never above root).
func cleanSegments(p string) string {
	trailing := strings.HasSuffix(p, "/")
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		switch s {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = true
			continue
		}
		out = append(out, s)
	}
	res := "/" + strings.Join(out, "/")
	if trailing && res != "/" {
		res += "/"
	}
	// A trailing "/." or "/.." leaves a directory; keep its slash for matching "/x/".
	return res
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
	return pathRule{pattern: raw, value: n, prefix: prefix}, nil
}

func (r pathRule) match(p string, foldCase bool) bool {
	v := r.value
	if foldCase {
		p, v = strings.ToLower(p), strings.ToLower(v)
	}
	if r.prefix {
		return strings.HasPrefix(p, v)
	}
	// "/v1/models" also matches "/v1/models/" (the same resource to most servers).
	return p == v || (!strings.HasSuffix(v, "/") && p == v+"/")
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
	for _, r := range d.denied {
		if r.match(p, true) {
			return false, "denied_paths " + r.pattern, nil
		}
	}
	if len(d.allowed) == 0 {
		return true, "", nil
	}
	for _, r := range d.allowed {
		if r.match(p, false) {
			return true, "allowed_paths " + r.pattern, nil
		}
	}
	return false, "allowed_paths", nil
}

// HasPathRules reports whether the entry restricts paths.
func (d *Domain) HasPathRules() bool { return len(d.allowed) > 0 || len(d.denied) > 0 }
