package policy

import (
	"fmt"
	"testing"
)

func benchPolicy(b *testing.B, n int) *Policy {
	b.Helper()
	src := "domains:\n"
	for i := 0; i < n; i++ {
		src += fmt.Sprintf("  - domain: host%d.example%d.com\n  - domain: \"*.wild%d.example.org\"\n", i, i, i)
	}
	src += "  - domain: api.openai.com\n    allowed_paths: [\"/v1/*\"]\n    denied_paths: [\"/v1/files*\", \"/v1/admin/*\"]\n"
	p, err := Parse("b.yaml", []byte(src))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkLookup(b *testing.B) {
	p := benchPolicy(b, 500)
	for _, host := range []string{"api.openai.com", "a.b.c.wild250.example.org", "API.OpenAI.com.", "not.listed.example.net"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Lookup(host)
			}
		})
	}
}

func BenchmarkCheckPath(b *testing.B) {
	d := benchPolicy(b, 1).Lookup("api.openai.com")
	for _, path := range []string{"/v1/chat/completions", "/v1/x/../files/%41", "/v2/models"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d.CheckPath(path)
			}
		})
	}
}

func BenchmarkParseExample(b *testing.B) {
	data := []byte(seedPolicy)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("b.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}
