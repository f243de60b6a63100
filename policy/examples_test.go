package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// Every file in examples/ is a valid policy that the JSON Schema accepts.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v %v", files, err)
	}
	s := compiledSchema(t)
	for _, f := range files {
		if _, err := ParseFile(f); err != nil {
			t.Errorf("%v", err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemaValidate(t, s, string(b)); err != nil {
			t.Errorf("%s: schema: %v", f, err)
		}
	}
}
