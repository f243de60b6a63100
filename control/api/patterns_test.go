package api

import (
	"regexp"
	"strings"
	"testing"
)

// patternCases pairs each loop with the regexp it replaced.
var patternCases = []struct {
	name string
	p    asciiPattern
	re   string
}{
	{"name", nameRE, `^[a-z0-9][a-z0-9._-]{0,62}$`},
	{"secretName", secretNameRE, `^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`},
	{"status", statusRE, `^[a-z0-9_-]{0,32}$`},
	{"spool", spoolRE, `^[a-f0-9]{16,64}$`},
}

var patternSeeds = []string{
	"", "a", "A", "0", ".", "-", "_", "a.b-c_d", "Ab.c", "-a", ".a", "_a", "a\n", "\na", "a b", "é", "a\xff",
	"0123456789abcdef", "0123456789abcdeF", "0123456789abcde", "ABC", "abc/def", "a\x00",
	strings.Repeat("a", 15), strings.Repeat("a", 16), strings.Repeat("f", 32), strings.Repeat("a", 33),
	strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65),
	strings.Repeat("Z", 128), strings.Repeat("Z", 129), strings.Repeat("9", 127) + "\n",
}

func TestPatternsMatchRegexps(t *testing.T) {
	for _, pc := range patternCases {
		re := regexp.MustCompile(pc.re)
		for _, s := range patternSeeds {
			if got, want := pc.p.MatchString(s), re.MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, regexp %s says %v", pc.name, s, got, pc.re, want)
			}
		}
	}
}

func FuzzPatterns(f *testing.F) {
	for _, s := range patternSeeds {
		f.Add(s)
	}
	res := make([]*regexp.Regexp, len(patternCases))
	for i, pc := range patternCases {
		res[i] = regexp.MustCompile(pc.re)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i, pc := range patternCases {
			if got, want := pc.p.MatchString(s), res[i].MatchString(s); got != want {
				t.Fatalf("%s(%q) = %v, regexp %s says %v", pc.name, s, got, pc.re, want)
			}
		}
	})
}
