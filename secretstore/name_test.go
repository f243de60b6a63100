package secretstore

import (
	"regexp"
	"strings"
	"testing"
)

// nameRE is the rule validName implements, kept here as its reference.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

func TestValidNameMatchesRule(t *testing.T) {
	for _, name := range []string{"", "a", "A_z.0-9", strings.Repeat("x", 128), strings.Repeat("x", 129), "a b", "a\n", "../x", "é", "a/b", "a\x00"} {
		if got, want := validName(name), nameRE.MatchString(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}

func FuzzValidName(f *testing.F) {
	f.Add("OPENAI_KEY")
	f.Add("a\n")
	f.Add(strings.Repeat("y", 129))
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := validName(name), nameRE.MatchString(name); got != want {
			t.Fatalf("validName(%q) = %v, want %v", name, got, want)
		}
	})
}
