package adminui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
)

type configView struct {
	YAML    string        `json:"yaml"`
	Domains []DomainEntry `json:"domains"`
	Policy  policyStatus  `json:"policy"`
	// DomainsError is set when the file's domains cannot be shown in the
	// structured editor (e.g. a YAML syntax error); use the raw editor.
	DomainsError string `json:"domains_error,omitempty"`
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	data, err := s.cfile.read()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read_failed", err.Error())
		return
	}
	v := configView{YAML: string(data), Policy: s.policyStatus()}
	if v.Domains, err = readDomains(data); err != nil {
		v.Domains = []DomainEntry{}
		v.DomainsError = err.Error()
	}
	writeJSON(w, http.StatusOK, v)
}

type yamlBody struct {
	YAML string `json:"yaml"`
}

func (s *Server) validateConfig(w http.ResponseWriter, r *http.Request) {
	var body yamlBody
	if !decodeBody(w, r, &body) {
		return
	}
	_, errs := s.cfile.validate([]byte(body.YAML))
	writeJSON(w, http.StatusOK, map[string]any{"valid": len(errs) == 0, "errors": nonNil(errs)})
}

func nonNil(e []ConfigError) []ConfigError {
	if e == nil {
		return []ConfigError{}
	}
	return e
}

// save validates data, writes it atomically and makes the daemon reload
// it. An invalid policy is answered 400 with its positions and not written.
func (s *Server) save(w http.ResponseWriter, r *http.Request, action string, data []byte, detail map[string]string) {
	if _, errs := s.cfile.validate(data); errs != nil {
		s.emitAdmin(r, action, audit.Deny, "invalid policy", detail)
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid_policy", Message: "the policy is invalid; nothing was saved", Errors: errs})
		return
	}
	if err := s.cfile.write(data); err != nil {
		writeError(w, http.StatusInternalServerError, "save_failed", err.Error())
		return
	}
	// The watcher would notice the rename too; reloading now makes the
	// change effective before this request returns.
	if err := s.cfg.Policy.Reload(); err != nil {
		// Someone changed the file between our write and the reload.
		writeJSON(w, http.StatusConflict, apiError{Error: "reload_failed", Message: "saved, but the reload failed: " + err.Error(), Errors: configErrors(err)})
		return
	}
	s.emitAdmin(r, action, audit.Allow, "", detail)
	s.getConfig(w, r)
}

func (s *Server) putConfig(w http.ResponseWriter, r *http.Request) {
	var body yamlBody
	if !decodeBody(w, r, &body) {
		return
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.save(w, r, "config_save", []byte(body.YAML), map[string]string{"editor": "yaml"})
}

func (s *Server) putDomains(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Domains []DomainEntry `json:"domains"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	normalizeDomains(body.Domains)
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	cur, err := s.cfile.read()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read_failed", err.Error())
		return
	}
	data, err := replaceDomains(cur, body.Domains)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid_policy", Message: "the file on disk cannot be edited structurally: " + err.Error() + "; fix it in the YAML editor"})
		return
	}
	s.save(w, r, "config_save", data, map[string]string{"editor": "domains", "domains": fmt.Sprint(len(body.Domains))})
}

// allowDomain adds a domain (e.g. one the agent was refused) to the policy
// with default settings. The UI asks for confirmation first.
func (s *Server) allowDomain(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Domain string `json:"domain"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	name, err := policy.NormalizeHost(strings.TrimSpace(body.Domain))
	if err != nil || name == "" {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad_request", Field: "domain", Message: fmt.Sprintf("invalid domain %q", body.Domain)})
		return
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	cur, err := s.cfile.read()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read_failed", err.Error())
		return
	}
	ds, err := readDomains(cur)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_policy", "the file on disk cannot be edited structurally: "+err.Error())
		return
	}
	for _, d := range ds {
		if strings.EqualFold(d.Domain, name) {
			writeError(w, http.StatusConflict, "exists", name+" is already in the policy (it may be disabled)")
			return
		}
	}
	ds = append(ds, DomainEntry{Domain: name})
	data, err := replaceDomains(cur, ds)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_policy", err.Error())
		return
	}
	s.save(w, r, "domain_allow", data, map[string]string{"domain": name})
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query().Get, s.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	ev := s.cfg.Events.Query(f)
	if ev == nil {
		ev = []audit.Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": ev})
}

// logStream is the live tail, as server-sent events. Each event is one
// audit event matching the request's filter.
func (s *Server) logStream(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query().Get, s.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	f.Since, f.Until = time.Time{}, time.Time{}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "no_stream", "streaming unsupported")
		return
	}
	release, ok := s.acquireStream(w)
	if !ok {
		return
	}
	defer release()
	ch, stop := s.cfg.Events.Subscribe()
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": live\n\n")
	fl.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
			fl.Flush()
		case ev := <-ch:
			if !f.Match(&ev) {
				continue
			}
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "data: %s\n\n", b)
			fl.Flush()
		}
	}
}

func (s *Server) analytics(w http.ResponseWriter, r *http.Request) {
	window := 15 * time.Minute
	if v := r.URL.Query().Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute || d > 7*24*time.Hour {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "bad_request", Field: "window", Message: "window: want a duration between 1m and 168h"})
			return
		}
		window = d
	}
	// Per-domain budgets look back an hour, the charts over the window.
	now := s.cfg.Now()
	a := ComputeAnalytics(s.cfg.Events.Since(now.Add(-max(window, time.Hour))), s.cfg.Policy.Current(), now, window)
	writeJSON(w, http.StatusOK, a)
}
