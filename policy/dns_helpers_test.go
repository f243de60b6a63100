package policy

import "testing"

func TestLookupNormalizedMatchesLookup(t *testing.T) {
	p, err := Parse("t.yaml", []byte("domains: [{domain: a.example.com}, {domain: '*.example.org'}, {domain: '*.x.example.org'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"a.example.com", "b.example.com", "example.org", "q.example.org", "q.x.example.org", "x.example.org", "com"} {
		if got, want := p.LookupNormalized(h), p.Lookup(h); got != want {
			t.Errorf("%s: LookupNormalized %v, Lookup %v", h, got, want)
		}
	}
}
