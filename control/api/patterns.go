package api

// Name checks used on every request. They are byte loops rather than
// regexps: compiling the regexps at package init cost every cagent command
// (not only the control server) ~0.3 ms and ~3,300 allocations. The loops
// are fuzzed against the regexps they replace (patterns_test.go).

// asciiPattern matches ^[first][rest]{min-1,max-1}$ when first is set, else
// ^[rest]{min,max}$.
type asciiPattern struct {
	first    func(byte) bool // nil: the first byte is checked by rest
	rest     func(byte) bool
	min, max int // length bounds in bytes
}

func (p asciiPattern) MatchString(s string) bool {
	if len(s) < p.min || len(s) > p.max {
		return false
	}
	for i := 0; i < len(s); i++ {
		ok := p.rest
		if i == 0 && p.first != nil {
			ok = p.first
		}
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isLowerDigit(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
func isAlnum(c byte) bool      { return isLowerDigit(c) || 'A' <= c && c <= 'Z' }
func isHex(c byte) bool        { return 'a' <= c && c <= 'f' || '0' <= c && c <= '9' }

var (
	// ^[a-z0-9][a-z0-9._-]{0,62}$
	nameRE = asciiPattern{first: isLowerDigit, min: 1, max: 63,
		rest: func(c byte) bool { return isLowerDigit(c) || c == '.' || c == '_' || c == '-' }}
	// ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$
	secretNameRE = asciiPattern{first: isAlnum, min: 1, max: 128,
		rest: func(c byte) bool { return isAlnum(c) || c == '.' || c == '_' || c == '-' }}
	// ^[a-z0-9_-]{0,32}$
	statusRE = asciiPattern{min: 0, max: 32,
		rest: func(c byte) bool { return isLowerDigit(c) || c == '_' || c == '-' }}
	// ^[a-f0-9]{16,64}$
	spoolRE = asciiPattern{rest: isHex, min: 16, max: 64}
)
