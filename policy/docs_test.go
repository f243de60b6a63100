package policy

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

type docBlock struct {
	lang string
	line int // of the opening fence
	text string
}

func docBlocks(t testing.TB, path string) (string, []docBlock) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []docBlock
	var cur *docBlock
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &docBlock{lang: strings.TrimSpace(strings.TrimPrefix(line, "```")), line: n}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: unclosed code block", path, cur.line)
	}
	return string(data), blocks
}

// TestDocsExamples parses every ```yaml block of docs/configuration.md: each
// must be a valid policy (and pass the JSON Schema), unless it has a line
// "# invalid...", and then it must fail. A yaml block followed by a plain block
// of "cagent.yaml:..." lines must produce exactly those errors.
func TestDocsExamples(t *testing.T) {
	const path = "../docs/configuration.md"
	_, blocks := docBlocks(t, path)
	schema := compiledSchema(t)
	n := 0
	for i, b := range blocks {
		if b.lang != "yaml" {
			continue
		}
		n++
		invalid := false
		for _, l := range strings.Split(b.text, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "# invalid") {
				invalid = true
			}
		}
		_, err := Parse("cagent.yaml", []byte(b.text))
		switch {
		case invalid && err == nil:
			t.Errorf("%s:%d: block marked # invalid parses", path, b.line)
		case !invalid && err != nil:
			t.Errorf("%s:%d: example does not parse:\n%v", path, b.line, err)
		case !invalid:
			if serr := schemaValidate(t, schema, b.text); serr != nil {
				t.Errorf("%s:%d: example fails the JSON Schema: %v", path, b.line, serr)
			}
		}
		if i+1 < len(blocks) && blocks[i+1].lang == "" && strings.HasPrefix(blocks[i+1].text, "cagent.yaml:") {
			want := strings.TrimSpace(blocks[i+1].text)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != want {
				t.Errorf("%s:%d: documented output differs\n--- got\n%s\n--- documented\n%s", path, blocks[i+1].line, got, want)
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d yaml examples found", n)
	}
}

// TestDocsCoverEveryKey fails when a policy key is missing from the docs.
func TestDocsCoverEveryKey(t *testing.T) {
	doc, _ := docBlocks(t, "../docs/configuration.md")
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, prefix string) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] {
			return
		}
		seen[ty] = true
		for i := 0; i < ty.NumField(); i++ {
			f := ty.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			if !regexp.MustCompile("[`.]" + regexp.QuoteMeta(name) + "[`.]").MatchString(doc) {
				t.Errorf("docs/configuration.md does not mention `%s` (%s%s)", name, prefix, name)
			}
			walk(f.Type, prefix+name+".")
		}
	}
	walk(reflect.TypeOf(Policy{}), "")
}
