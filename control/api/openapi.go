package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/policy"
)

// pathParamRE is compiled on first use: only the OpenAPI document needs it.
var pathParamRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\{([a-z_]+)\}`) })

// OpenAPI returns the OpenAPI 3.1 document, generated from the route table
// that also builds the mux, so the two cannot drift apart.
func (s *Server) OpenAPI() map[string]any {
	paths := map[string]map[string]any{}
	for _, rt := range append(s.routes[:len(s.routes):len(s.routes)], outsideRoutes()...) {
		op := map[string]any{
			"operationId": operationID(rt),
			"summary":     rt.Summary,
			"responses": map[string]any{
				"default": map[string]any{
					"description": "error",
					"content":     map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}},
				},
				okStatus(rt): okResponse(rt),
			},
		}
		if rt.WebSocket {
			op["responses"].(map[string]any)["101"] = map[string]any{
				"description": "Switching Protocols: the connection is now a WebSocket. Every message is one JSON object with a type. " +
					"Control plane to data plane: state (on connect, on every change, at least every " + wire.ResyncInterval.String() + "), command, heartbeat_ack, logs_ack, error. " +
					"Data plane to control plane: heartbeat, logs. Messages are at most " + strconv.Itoa(wire.MaxMessage) + " bytes; a logs message has at most " + strconv.Itoa(wire.MaxLogBatch) + " entries.",
			}
			delete(op["responses"].(map[string]any), "200")
			op["x-websocket"] = map[string]any{
				"server_to_client": streamSchema(wire.TypeState, wire.TypeCommand, wire.TypeHeartbeatAck, wire.TypeLogsAck, wire.TypeError),
				"client_to_server": streamSchema(wire.TypeHeartbeat, wire.TypeLogs),
			}
			if rt.Pattern == TerminalPattern {
				op["responses"].(map[string]any)["101"] = map[string]any{
					"description": "Switching Protocols: the connection is now a terminal. Binary messages are pty bytes both ways; text messages are JSON: " +
						`{"type":"resize","cols":N,"rows":N} from the client; {"type":"exit","code":N} or {"type":"error","error":"...","message":"..."} to it.`,
				}
				op["x-websocket"] = map[string]any{"binary": "pty input and output"}
			}
			op["parameters"] = []any{
				map[string]any{"name": "Upgrade", "in": "header", "required": true, "schema": map[string]any{"const": "websocket"}},
				map[string]any{"name": "Connection", "in": "header", "required": true, "schema": map[string]any{"type": "string"}},
				map[string]any{"name": "Sec-WebSocket-Key", "in": "header", "required": true, "schema": map[string]any{"type": "string"}},
				map[string]any{"name": "Sec-WebSocket-Version", "in": "header", "required": true, "schema": map[string]any{"const": "13"}},
			}
		}
		if rt.Kinds == nil {
			op["security"] = []any{}
		} else {
			op["x-token-kinds"] = rt.Kinds
		}
		var params []any
		for _, m := range pathParamRE().FindAllStringSubmatch(rt.Pattern, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.Query {
			params = append(params, map[string]any{"name": q, "in": "query", "required": false, "schema": map[string]any{"type": "string"}})
		}
		if len(params) > 0 && !rt.WebSocket {
			op["parameters"] = params
		} else if len(params) > 0 {
			op["parameters"] = append(op["parameters"].([]any), params...)
		}
		if rt.Body != nil {
			op["requestBody"] = map[string]any{
				"required": true,
				"content":  map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(rt.Body))}},
			}
		}
		if paths[rt.Pattern] == nil {
			paths[rt.Pattern] = map[string]any{}
		}
		paths[rt.Pattern][strings.ToLower(rt.Method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "Cagent control plane",
			"version":     "1",
			"description": "Tenants, tokens, agents, domain policies, secrets, IP ACLs, commands, audit trail and logs. Errors are {\"error\": code, \"message\": text, \"request_id\": id}; every response carries X-Request-Id.",
		},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas": map[string]any{
				"Error": schemaOf(reflect.TypeOf(errorBody{})),
			},
		},
		"security": []any{map[string]any{"bearer": []any{}}},
	}
}

// streamSchema is the schema of the stream's messages of the given types.
func streamSchema(types ...string) map[string]any {
	sch := schemaOf(reflect.TypeOf(wire.Msg{}))
	props := map[string]any{}
	for k, v := range sch["properties"].(map[string]any) {
		props[k] = v
	}
	props["type"] = map[string]any{"type": "string", "enum": types}
	sch["properties"] = props
	return sch
}

func okResponse(rt Route) map[string]any {
	r := map[string]any{"description": "success"}
	if rt.Resp != nil {
		r["content"] = map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(rt.Resp))}}
	}
	return r
}

func okStatus(rt Route) string {
	switch {
	case rt.Method == http.MethodDelete:
		return "204"
	case rt.Method == http.MethodPost && strings.HasSuffix(rt.Pattern, "/logs"):
		return "202"
	case rt.Method == http.MethodPost && !strings.HasSuffix(rt.Pattern, "/rotate") && !strings.HasSuffix(rt.Pattern, "/heartbeat"):
		return "201"
	}
	return "200"
}

func operationID(rt Route) string {
	p := strings.TrimPrefix(rt.Pattern, v1+"/")
	p = pathParamRE().ReplaceAllString(p, "by_$1")
	p = strings.NewReplacer("/", "_", "-", "_", ".", "_").Replace(p)
	return strings.ToLower(rt.Method) + "_" + p
}

var (
	timeType   = reflect.TypeOf(time.Time{})
	rawType    = reflect.TypeOf(json.RawMessage{})
	domainType = reflect.TypeOf(policy.Domain{})
	marshaler  = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
)

func schemaOf(t reflect.Type) map[string]any {
	return schemaDepth(t, 0)
}

func schemaDepth(t reflect.Type, depth int) map[string]any {
	if depth > 8 {
		return map[string]any{}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawType:
		return map[string]any{}
	case t.Kind() != reflect.Struct && t.Implements(marshaler):
		return map[string]any{"type": []string{"string", "integer"}}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": schemaDepth(t.Elem(), depth+1)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaDepth(t.Elem(), depth+1)}
	case reflect.Struct:
		props := map[string]any{}
		var required []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() && !f.Anonymous {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				// Embedded struct: its fields are promoted in JSON.
				emb := schemaDepth(f.Type, depth+1)
				if ps, ok := emb["properties"].(map[string]any); ok {
					for k, v := range ps {
						props[k] = v
					}
				}
				if rs, ok := emb["required"].([]string); ok {
					required = append(required, rs...)
				}
				continue
			}
			if name == "" {
				name = f.Name
			}
			var fs map[string]any
			if t == reflect.TypeOf(policyReq{}) && f.Name == "Entry" {
				fs = schemaDepth(domainType, depth+1)
			} else {
				fs = schemaDepth(f.Type, depth+1)
			}
			if f.Type.Kind() == reflect.Pointer && !strings.Contains(opts, "omitempty") {
				// Marshalled as null when unset.
				fs = map[string]any{"anyOf": []any{fs, map[string]any{"type": "null"}}}
			}
			if d := f.Tag.Get("desc"); d != "" {
				fs["description"] = d
			}
			props[name] = fs
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") && f.Type.Kind() != reflect.Pointer {
				required = append(required, name)
			}
		}
		out := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			out["required"] = required
		}
		return out
	}
	return map[string]any{}
}

func (s *Server) openapi(c *call) error {
	s.openapiOnce.Do(func() {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s.OpenAPI()); err != nil {
			panic(err) // maps of strings and numbers always encode
		}
		s.openapiJSON = b.Bytes()
	})
	c.w.Header().Set("Content-Type", "application/json")
	c.w.WriteHeader(http.StatusOK)
	_, err := c.w.Write(s.openapiJSON)
	return err
}
