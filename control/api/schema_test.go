package api_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// responseChecker validates answers against the schemas of the served
// OpenAPI document: success bodies against the operation's response schema,
// error bodies against Error.
type responseChecker struct {
	ok  map[string]*jsonschema.Schema // "METHOD pattern"
	err *jsonschema.Schema
}

func newResponseChecker(t testing.TB, e *env) *responseChecker {
	t.Helper()
	r := e.must(200, e.do("GET", "/api/v1/openapi.json", "", nil))
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	rc := &responseChecker{ok: map[string]*jsonschema.Schema{}}
	compile := func(url string, sch any) *jsonschema.Schema {
		if err := c.AddResource(url, sch); err != nil {
			t.Fatal(err)
		}
		s, err := c.Compile(url)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		return s
	}
	m := doc.(map[string]any)
	rc.err = compile("mem://error.json", m["components"].(map[string]any)["schemas"].(map[string]any)["Error"])
	n := 0
	for path, ops := range m["paths"].(map[string]any) {
		for method, op := range ops.(map[string]any) {
			for code, resp := range op.(map[string]any)["responses"].(map[string]any) {
				if code == "default" {
					continue
				}
				content, ok := resp.(map[string]any)["content"].(map[string]any)
				if !ok {
					continue
				}
				n++
				sch := content["application/json"].(map[string]any)["schema"]
				rc.ok[strings.ToUpper(method)+" "+path] = compile(fmt.Sprintf("mem://op%d.json", n), sch)
			}
		}
	}
	return rc
}

func (rc *responseChecker) check(method, pattern string, r resp) error {
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		return nil
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body))
	if err != nil {
		return err
	}
	sch := rc.err
	if r.status < 400 {
		sch = rc.ok[method+" "+pattern]
		if sch == nil {
			return fmt.Errorf("JSON answer %d but the document has no response schema", r.status)
		}
	}
	return sch.Validate(inst)
}
