package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/policy"
)

// decodeJSON reads one JSON value from body into v: unknown fields, trailing
// data and bodies over max bytes are errors naming what is wrong.
func decodeJSON(body io.Reader, max int64, v any) *apiError {
	data, err := io.ReadAll(io.LimitReader(body, max+1))
	if err != nil {
		return errf(http.StatusBadRequest, "invalid_request", "reading body: %v", err)
	}
	if int64(len(data)) > max {
		return errf(http.StatusRequestEntityTooLarge, "body_too_large", "request body larger than %d bytes", max)
	}
	return decodeBytes(data, v)
}

func decodeBytes(data []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return errf(http.StatusBadRequest, "invalid_json", "trailing data after the JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errf(http.StatusBadRequest, "invalid_json", "trailing data after the JSON value")
	}
	return nil
}

func jsonError(err error) *apiError {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		f := te.Field
		if f == "" {
			f = "body"
		}
		return &apiError{status: http.StatusBadRequest, code: "invalid_request", field: f, msg: fmt.Sprintf("%s: want %s, got JSON %s", f, te.Type, te.Value)}
	case errors.As(err, &se):
		return errf(http.StatusBadRequest, "invalid_json", "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errf(http.StatusBadRequest, "invalid_json", "empty or truncated body")
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
		f = strings.Trim(f, `"`)
		return &apiError{status: http.StatusBadRequest, code: "invalid_request", field: f, msg: fmt.Sprintf("%s: unknown field", f)}
	}
	return errf(http.StatusBadRequest, "invalid_request", "%s", msg)
}

// Request bodies. Each has a check method, which is what the fuzz tests
// exercise together with decoding.

type createTenantReq struct {
	Name string `json:"name" desc:"lower-case letters, digits, '.', '_', '-'"`
}

func (r *createTenantReq) check() *apiError {
	if !nameRE.MatchString(r.Name) {
		return fieldErr("name", "use 1-63 lower-case letters, digits, '.', '_' or '-'")
	}
	return nil
}

type createTokenReq struct {
	Kind      string     `json:"kind" desc:"admin, dev or agent (superadmin on /tokens)"`
	Name      string     `json:"name"`
	AgentID   string     `json:"agent_id,omitempty" desc:"required for agent tokens"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func (r *createTokenReq) check(now time.Time, superadmin bool) *apiError {
	if superadmin {
		if r.Kind != "" && r.Kind != store.KindSuperadmin {
			return fieldErr("kind", "only superadmin tokens are created here")
		}
		if r.AgentID != "" {
			return fieldErr("agent_id", "only agent tokens name an agent")
		}
		r.Kind = store.KindSuperadmin
	} else {
		switch r.Kind {
		case store.KindAdmin, store.KindDev:
			if r.AgentID != "" {
				return fieldErr("agent_id", "only agent tokens name an agent")
			}
		case store.KindAgent:
			if r.AgentID == "" {
				return fieldErr("agent_id", "required for agent tokens")
			}
		default:
			return fieldErr("kind", "use admin, dev or agent")
		}
	}
	if len(r.Name) > 128 || strings.ContainsFunc(r.Name, isControl) {
		return fieldErr("name", "at most 128 printable characters")
	}
	if r.ExpiresAt != nil && !r.ExpiresAt.After(now) {
		return fieldErr("expires_at", "must be in the future")
	}
	if r.ExpiresAt != nil && !storable(*r.ExpiresAt) {
		return fieldErr("expires_at", "%s", storableMsg)
	}
	return nil
}

// Times are stored as Unix nanoseconds (int64): later than 2262-04-11 they
// would wrap around (to "never expires", or a date in the past), and
// before 1970 they are never meaningful here.
var maxStorable = time.Unix(0, math.MaxInt64)

const storableMsg = "must be between 1970 and 2262"

func storable(t time.Time) bool {
	return !t.Before(time.Unix(0, 0)) && t.Before(maxStorable)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

type updateTokenReq struct {
	Disabled  *bool      `json:"disabled,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func (r *updateTokenReq) check() *apiError {
	if r.Disabled == nil && r.ExpiresAt == nil {
		return fieldErr("disabled", "set disabled or expires_at")
	}
	if r.ExpiresAt != nil && !storable(*r.ExpiresAt) {
		return fieldErr("expires_at", "%s", storableMsg)
	}
	return nil
}

type createAgentReq struct {
	Name string `json:"name"`
}

func (r *createAgentReq) check() *apiError {
	if !nameRE.MatchString(r.Name) {
		return fieldErr("name", "use 1-63 lower-case letters, digits, '.', '_' or '-'")
	}
	return nil
}

type policyReq struct {
	AgentID string           `json:"agent_id,omitempty" desc:"empty: tenant-wide; else this agent only (overrides the tenant-wide entry for the same domain)"`
	Entry   *json.RawMessage `json:"entry" desc:"a domains[] entry of the policy file, as JSON"`
	Enabled *bool            `json:"enabled,omitempty" desc:"default true"`
}

// check validates the entry with the policy package and returns it normalized.
func (r *policyReq) check() (policy.Domain, *apiError) {
	if r.Entry == nil {
		return policy.Domain{}, fieldErr("entry", "required")
	}
	var d policy.Domain
	if err := decodeBytes(*r.Entry, &d); err != nil {
		if err.field != "" {
			err.field = "entry." + err.field
			err.msg = "entry." + err.msg
		}
		return d, err
	}
	d.Enabled = nil // enable/disable is the row's flag, not the entry's
	p := policy.Policy{Domains: []policy.Domain{d}}
	if err := p.Validate(); err != nil {
		return d, policyErr(err)
	}
	if err := hostCredentialErr(&p.Domains[0]); err != nil {
		return d, err
	}
	return p.Domains[0], nil
}

// hostCredentialErr refuses credentials whose value comes from the data
// plane's host (credential.env, credential.file): through the control
// plane they would let a tenant admin, or whoever holds a superadmin
// token, make a data plane read any of its environment variables (its
// agent token among them) or files and send them to a domain of their
// choosing. Control-plane credentials name a secret of the tenant.
func hostCredentialErr(d *policy.Domain) *apiError {
	c := d.Credential
	if c == nil {
		return nil
	}
	for _, f := range []struct{ name, v string }{{"env", c.Env}, {"file", c.File}} {
		if f.v != "" {
			return &apiError{status: http.StatusBadRequest, code: "invalid_policy", field: "entry.credential." + f.name,
				msg: "entry.credential." + f.name + ": the control plane sends credentials from its secrets only; use secret: NAME"}
		}
	}
	return nil
}

// policyErr turns policy validation errors into a 400 naming the field.
func policyErr(err error) *apiError {
	var es policy.Errors
	if !errors.As(err, &es) || len(es) == 0 {
		return errf(http.StatusBadRequest, "invalid_request", "%v", err)
	}
	e := es[0]
	field := strings.Replace(e.Path, "domains[0]", "entry", 1)
	if field == "" {
		field = "entry"
	}
	msgs := make([]string, len(es))
	for i, x := range es {
		msgs[i] = strings.Replace(x.Path, "domains[0]", "entry", 1) + ": " + x.Msg
	}
	return &apiError{status: http.StatusBadRequest, code: "invalid_policy", field: field, msg: strings.Join(msgs, "; ")}
}

type secretReq struct {
	Value *string `json:"value" desc:"the secret; never returned by the API"`
}

func (r *secretReq) check() *apiError {
	if r.Value == nil || *r.Value == "" {
		return fieldErr("value", "required")
	}
	if len(*r.Value) > 32<<10 {
		return fieldErr("value", "at most 32 KiB")
	}
	return nil
}

type aclReq struct {
	CIDR        string `json:"cidr" desc:"e.g. 203.0.113.0/24 or 2001:db8::/48"`
	Description string `json:"description,omitempty"`
}

func (r *aclReq) check() *apiError {
	p, err := netip.ParsePrefix(strings.TrimSpace(r.CIDR))
	if err != nil {
		return fieldErr("cidr", "not a CIDR prefix")
	}
	r.CIDR = p.Masked().String()
	if len(r.Description) > 256 || strings.ContainsFunc(r.Description, isControl) {
		return fieldErr("description", "at most 256 printable characters")
	}
	return nil
}

type commandReq struct {
	Command       string `json:"command" desc:"start, stop, restart or wipe"`
	WipeWorkspace bool   `json:"wipe_workspace,omitempty" desc:"with wipe: also clear the workspace"`
}

func (r *commandReq) check() *apiError {
	switch r.Command {
	case "start", "stop", "restart":
		if r.WipeWorkspace {
			return fieldErr("wipe_workspace", "only with the wipe command")
		}
	case "wipe":
	default:
		return fieldErr("command", "use start, stop, restart or wipe")
	}
	return nil
}

type commandResult struct {
	ID     string `json:"id"`
	Status string `json:"status" desc:"succeeded or failed"`
	Result string `json:"result,omitempty"`
}

type heartbeatReq struct {
	Status  string          `json:"status,omitempty" desc:"e.g. running, stopped"`
	Metrics json.RawMessage `json:"metrics,omitempty" desc:"a JSON object"`
	Results []commandResult `json:"command_results,omitempty"`
}

func (r *heartbeatReq) check() *apiError {
	if !statusRE.MatchString(r.Status) {
		return fieldErr("status", "at most 32 of a-z, 0-9, '_' and '-'")
	}
	if len(r.Metrics) > 0 {
		m := bytes.TrimSpace(r.Metrics)
		if len(m) == 0 || m[0] != '{' {
			return fieldErr("metrics", "must be a JSON object")
		}
		if len(m) > 8<<10 {
			return fieldErr("metrics", "at most 8 KiB")
		}
		var c bytes.Buffer
		if err := json.Compact(&c, m); err != nil {
			return fieldErr("metrics", "invalid JSON")
		}
		r.Metrics = c.Bytes()
	}
	if len(r.Results) > 10 {
		return fieldErr("command_results", "at most 10")
	}
	for i := range r.Results {
		x := &r.Results[i]
		if x.Status != store.CmdSucceeded && x.Status != store.CmdFailed {
			return fieldErr(fmt.Sprintf("command_results[%d].status", i), "use succeeded or failed")
		}
		if len(x.Result) > 4096 {
			return fieldErr(fmt.Sprintf("command_results[%d].result", i), "at most 4096 bytes")
		}
	}
	return nil
}

type logsReq struct {
	Entries []json.RawMessage `json:"entries" desc:"JSON objects (audit events); tenant and agent are set by the server"`
}

// spoofable are fields an agent might set to impersonate another tenant or
// agent; the server drops them and records the real ones.
var spoofable = []string{"tenant", "tenant_id", "agent", "agent_id"}

// check turns the batch into log entries owned by tenantID/agentID.
func (r *logsReq) check(maxBatch int, tenantID, agentID string, now time.Time) ([]store.LogEntry, *apiError) {
	if len(r.Entries) == 0 {
		return nil, fieldErr("entries", "required")
	}
	if len(r.Entries) > maxBatch {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "batch_too_large", field: "entries", msg: fmt.Sprintf("entries: at most %d per batch", maxBatch)}
	}
	out := make([]store.LogEntry, 0, len(r.Entries))
	for i, raw := range r.Entries {
		field := fmt.Sprintf("entries[%d]", i)
		if len(raw) > DefaultMaxLogEntry {
			return nil, fieldErr(field, "larger than %d bytes", DefaultMaxLogEntry)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil || m == nil {
			return nil, fieldErr(field, "must be a JSON object")
		}
		for _, k := range spoofable {
			delete(m, k)
		}
		e := store.LogEntry{ID: store.NewID(), TenantID: tenantID, AgentID: agentID, TS: now, ReceivedAt: now}
		if ts, ok := m["ts"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, ts); err == nil && t.Before(now.Add(5*time.Minute)) && storable(t) {
				e.TS = t.UTC()
			}
		}
		if typ, ok := m["type"].(string); ok && statusRE.MatchString(typ) {
			e.Type = typ
		}
		data, err := json.Marshal(m)
		if err != nil {
			return nil, fieldErr(field, "%v", err)
		}
		e.Data = data
		out = append(out, e)
	}
	return out, nil
}
