package policy

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

func compiledSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	b, err := JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("policy.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("policy.json")
	if err != nil {
		t.Fatalf("schema does not compile: %v", err)
	}
	return s
}

// schemaValidate checks a YAML policy against the JSON Schema. YAML merge keys
// are resolved by yaml.v3 on the way, as editors do.
func schemaValidate(t testing.TB, s *jsonschema.Schema, src string) error {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(src), &v); err != nil {
		return err
	}
	if v == nil {
		v = map[string]any{}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%q: %v", src, err)
	}
	j, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return s.Validate(j)
}

// The schema and the parser must agree on every valid policy in the tests:
// an editor must never flag a file that cagent accepts.
func TestSchemaAcceptsValidPolicies(t *testing.T) {
	s := compiledSchema(t)
	example, err := os.ReadFile("../examples/cagent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srcs := append([]string{string(example), seedPolicy, everyKeyPolicy, matchPolicy}, validSnippets...)
	for _, src := range srcs {
		if _, err := Parse("t.yaml", []byte(src)); err != nil {
			t.Fatalf("parser rejects %q: %v", src, err)
		}
		if err := schemaValidate(t, s, src); err != nil {
			t.Errorf("schema rejects %q: %v", src, err)
		}
	}
}

func TestSchemaRejects(t *testing.T) {
	s := compiledSchema(t)
	for _, src := range []string{
		"frobnicate: 1", "dns: {upstreams: []}", "domains: [{domain: a.com, readonly: true}]",
		"mode: cloud", "sandbox: {runtime: docker}", "domains: [{domain: a.com, ports: [0]}]",
		"ip_ranges: [{cidr: 10.0.0.0/8, ports: [65536]}]", "egress_limits: {default: lots}",
		"audit: {retention: forever}", "rate_limits: {default: {burst_size: 5}}",
		`domains: [{domain: "*.a.com", credential: {header: X-Key, env: K}}]`,
	} {
		if err := schemaValidate(t, s, src); err == nil {
			t.Errorf("schema accepts %q", src)
		}
		if _, err := Parse("t.yaml", []byte(src)); err == nil {
			t.Errorf("parser accepts %q", src)
		}
	}
	b, _ := JSONSchema()
	if strings.Contains(string(b), "(?") {
		t.Error("schema patterns must be ECMA-262 (editors), without Go-only (?flags)")
	}
}
