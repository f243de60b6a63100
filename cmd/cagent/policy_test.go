package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// runCagent runs the CLI in-process the way main does, returning stdout,
// stderr and the exit status main would use.
func runCagent(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(""))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
	default:
		fmt.Fprintln(&errOut, "cagent:", err)
		code = 1
	}
	return out.String(), errOut.String(), code
}

// TestPolicyCheckGolden runs `cagent policy check` on each testdata/check-*.yaml
// and compares stdout and the exit status with the .golden file beside it.
// Run `go test ./cmd/cagent -run Golden -update` to rewrite them.
func TestPolicyCheckGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/check-*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			out, errOut, code := runCagent(t, "policy", "check", file)
			if errOut != "" {
				t.Errorf("stderr: %q", errOut)
			}
			got := fmt.Sprintf("%sexit status %d\n", out, code)
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("policy check %s:\n--- got\n%s--- want\n%s", file, got, want)
			}
			// Every line is FILE:LINE:COL: message.
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var l, c int
				rest, ok := strings.CutPrefix(line, file+":")
				if !ok {
					t.Errorf("line %q does not start with %s:", line, file)
					continue
				}
				if n, err := fmt.Sscanf(rest, "%d:%d:", &l, &c); n != 2 || err != nil || l < 1 || c < 1 {
					t.Errorf("line %q has no LINE:COL", line)
				}
			}
		})
	}
}

func TestPolicyCheck(t *testing.T) {
	out, errOut, code := runCagent(t, "policy", "check", "../../examples/cagent.yaml")
	if code != 0 || out != "" || errOut != "" {
		t.Errorf("valid example: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	_, errOut, code = runCagent(t, "policy", "check", "testdata/does-not-exist.yaml")
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: code %d, stderr %q", code, errOut)
	}
	_, errOut, code = runCagent(t, "policy", "check")
	if code != 1 || !strings.Contains(errOut, "accepts 1 arg") {
		t.Errorf("no argument: code %d, stderr %q", code, errOut)
	}
	out, _, code = runCagent(t, "policy", "check", "--help")
	if code != 0 || !strings.Contains(out, "FILE:LINE:COL") {
		t.Errorf("--help: code %d, %q", code, out)
	}
}

// compileSchema compiles the output of `cagent policy schema`; the compiler
// checks it against the draft 2020-12 meta-schema.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	out, errOut, code := runCagent(t, "policy", "schema")
	if code != 0 || errOut != "" {
		t.Fatalf("policy schema: code %d, stderr %q", code, errOut)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(out))
	if err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("policy-schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("policy-schema.json")
	if err != nil {
		t.Fatalf("schema does not compile: %v", err)
	}
	return s
}

// yamlToJSON converts a YAML document to the JSON value the schema validates.
func yamlToJSON(t *testing.T, src []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(src, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	j, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestPolicySchema(t *testing.T) {
	s := compileSchema(t)
	example, err := os.ReadFile("../../examples/cagent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(yamlToJSON(t, example)); err != nil {
		t.Errorf("schema rejects examples/cagent.yaml: %v", err)
	}
	reject := map[string]string{
		"unknown top-level key": "mode: standalone\nfrobnicate: 1\n",
		"unknown nested key":    "domains: [{domain: a.com, readonly: true}]\n",
		"typo in dns":           "dns: {upstreams: [1.1.1.1]}\n",
		"bad enum":              "mode: cloud\n",
		"bad port":              "domains: [{domain: a.com, ports: [70000]}]\n",
		"port zero":             "ip_ranges: [{cidr: 10.0.0.0/8, ports: [0]}]\n",
		"missing domain":        "domains: [{alias: x}]\n",
		"missing header":        "domains: [{domain: a.com, credential: {env: X}}]\n",
		"bad size":              "egress_limits: {default: 100 megs}\n",
		"bad duration":          "proxy: {timeout: soon}\n",
		"list for mapping":      "sandbox: {resources: [1]}\n",
		"string for bool":       "domains: [{domain: a.com, read_only: \"yes\"}]\n",
	}
	for name, src := range reject {
		if err := s.Validate(yamlToJSON(t, []byte(src))); err == nil {
			t.Errorf("schema accepts %s: %q", name, src)
		}
	}
	accept := []string{
		"egress_limits: {default: 10MiB}\n", "egress_limits: {default: 1048576}\n", "egress_limits: {default: 1.5GiB}\n",
		"proxy: {timeout: 90}\n", "proxy: {timeout: 1h30m}\n", "dns: {cache_ttl: \"300\"}\n",
		"sandbox: {env: {A: b}}\n", "domains: [{domain: a.com, enabled: false, ports: [8443]}]\n",
	}
	for _, src := range accept {
		if err := s.Validate(yamlToJSON(t, []byte(src))); err != nil {
			t.Errorf("schema rejects %q: %v", src, err)
		}
	}
}
