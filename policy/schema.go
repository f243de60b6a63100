package policy

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// nullable lets a property schema also accept null.
func nullable(s map[string]any) map[string]any {
	switch {
	case s["oneOf"] != nil:
		s["oneOf"] = append(s["oneOf"].([]any), map[string]any{"type": "null"})
	case s["type"] != nil:
		s["type"] = []any{s["type"], "null"}
	}
	if e, ok := s["enum"].([]string); ok {
		vals := make([]any, 0, len(e)+1)
		for _, v := range e {
			vals = append(vals, v)
		}
		s["enum"] = append(vals, nil)
	}
	return s
}

// JSONSchema returns the JSON Schema (draft 2020-12) of the policy file,
// generated from the same struct tags the parser uses, so the two cannot drift.
func JSONSchema() ([]byte, error) {
	s := schemaFor(reflect.TypeOf(Policy{}))
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "https://cagent.dev/schema/policy-v1.json"
	s["title"] = "Cagent policy (cagent.yaml), version 1"
	// The one cross-field rule editors can check: no credential on a
	// wildcard entry (validate.go says why).
	domain := s["properties"].(map[string]any)["domains"].(map[string]any)["items"].(map[string]any)
	domain["if"] = map[string]any{"required": []string{"domain"}, "properties": map[string]any{"domain": map[string]any{"pattern": `^\*\.`}}}
	domain["then"] = map[string]any{"properties": map[string]any{"credential": map[string]any{"type": "null"}}}
	return json.MarshalIndent(s, "", "  ")
}

var (
	durationType = reflect.TypeOf(Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
)

func schemaFor(t reflect.Type) map[string]any {
	switch t {
	case durationType:
		return map[string]any{"oneOf": []any{
			map[string]any{"type": "integer", "minimum": 0, "description": "seconds"},
			map[string]any{"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^[0-9]+$`},
		}}
	case sizeType:
		return map[string]any{"oneOf": []any{
			map[string]any{"type": "integer", "minimum": 0, "description": "bytes"},
			map[string]any{"type": "string", "pattern": `^[0-9]+(\.[0-9]+)?\s*([bB]|[kKmMgGtT]([iI]?[bB])?)?$`},
		}}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaFor(t.Elem())
	case reflect.Struct:
		props := map[string]any{}
		var required []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			ps := schemaFor(f.Type)
			if d := f.Tag.Get("desc"); d != "" {
				ps["description"] = d
			}
			if e := f.Tag.Get("enum"); e != "" {
				ps["enum"] = strings.Split(e, ",")
			}
			// minimum/maximum apply to a number, or to a list's items.
			for _, kw := range []string{"minimum", "maximum"} {
				if b := f.Tag.Get(kw); b != "" {
					n, err := strconv.Atoi(b)
					if err != nil {
						panic("policy: bad " + kw + " tag on " + f.Name)
					}
					target := ps
					if items, ok := ps["items"].(map[string]any); ok {
						target = items
					}
					target[kw] = n
				}
			}
			if jt := f.Tag.Get("json"); jt != "" && !strings.Contains(jt, "omitempty") {
				required = append(required, name)
			} else {
				// The parser reads an empty value ("dns:") as absent.
				ps = nullable(ps)
			}
			props[name] = ps
		}
		s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			s["required"] = required
		}
		return s
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaFor(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaFor(t.Elem())}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{}
}
