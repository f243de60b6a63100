package api

import (
	"net/http"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control/agentca"
	"github.com/cagent-dev/cagent/control/store"
)

var (
	public    []string = nil
	any4               = []string{store.KindSuperadmin, store.KindAdmin, store.KindDev, store.KindAgent}
	superOnly          = []string{store.KindSuperadmin}
	admins             = []string{store.KindSuperadmin, store.KindAdmin}
	readers            = []string{store.KindSuperadmin, store.KindAdmin, store.KindDev}
	agentOnly          = []string{store.KindAgent}
)

const v1 = "/api/v1"

// TerminalPattern is the web terminal's WebSocket (terminal.go).
const TerminalPattern = v1 + "/tenants/{tenant}/agents/{agent}/terminal"

func (s *Server) buildRoutes() []Route {
	T := v1 + "/tenants/{tenant}"
	return []Route{
		{Method: http.MethodGet, Pattern: v1 + "/openapi.json", Summary: "This OpenAPI document", Kinds: public, h: s.openapi},
		{Method: http.MethodGet, Pattern: v1 + "/healthz", Summary: "Liveness", Kinds: public, Resp: map[string]string{}, h: s.healthz},
		{Method: http.MethodGet, Pattern: v1 + "/whoami", Summary: "The calling token's identity", Kinds: any4, Resp: whoamiResp{}, h: s.whoami},

		{Method: http.MethodGet, Pattern: v1 + "/tenants", Summary: "List tenants", Kinds: superOnly, Resp: list[store.Tenant]{}, h: s.listTenants},
		{Method: http.MethodPost, Pattern: v1 + "/tenants", Summary: "Create a tenant", Kinds: superOnly, Body: createTenantReq{}, Resp: store.Tenant{}, h: s.createTenant},
		{Method: http.MethodGet, Pattern: T, Summary: "Get a tenant", Kinds: superOnly, Resp: store.Tenant{}, h: s.getTenant},
		{Method: http.MethodDelete, Pattern: T, Summary: "Delete a tenant (disables its tokens and agents)", Kinds: superOnly, h: s.deleteTenant},

		{Method: http.MethodGet, Pattern: v1 + "/tokens", Summary: "List superadmin tokens", Kinds: superOnly, Resp: list[store.Token]{}, h: s.listTokens},
		{Method: http.MethodPost, Pattern: v1 + "/tokens", Summary: "Create a superadmin token (shown once)", Kinds: superOnly, Body: createTokenReq{}, Resp: createdToken{}, h: s.createToken},
		{Method: http.MethodPatch, Pattern: v1 + "/tokens/{token}", Summary: "Enable, disable or change the expiry of a superadmin token", Kinds: superOnly, Body: updateTokenReq{}, Resp: store.Token{}, h: s.updateToken},
		{Method: http.MethodDelete, Pattern: v1 + "/tokens/{token}", Summary: "Revoke a superadmin token", Kinds: superOnly, h: s.deleteToken},
		{Method: http.MethodGet, Pattern: v1 + "/audit", Summary: "Query the audit trail of every tenant", Kinds: superOnly,
			Query: []string{"tenant_id", "actor", "action", "object_type", "object_id", "since", "until", "limit"}, Resp: list[store.AuditEntry]{}, h: s.queryAudit},

		{Method: http.MethodGet, Pattern: T + "/tokens", Summary: "List a tenant's tokens", Kinds: admins, Resp: list[store.Token]{}, h: s.listTokens},
		{Method: http.MethodPost, Pattern: T + "/tokens", Summary: "Create a token (shown once)", Kinds: admins, Body: createTokenReq{}, Resp: createdToken{}, h: s.createToken},
		{Method: http.MethodGet, Pattern: T + "/tokens/{token}", Summary: "Get a token's metadata", Kinds: admins, Resp: store.Token{}, h: s.getToken},
		{Method: http.MethodPatch, Pattern: T + "/tokens/{token}", Summary: "Enable, disable or change the expiry of a token", Kinds: admins, Body: updateTokenReq{}, Resp: store.Token{}, h: s.updateToken},
		{Method: http.MethodDelete, Pattern: T + "/tokens/{token}", Summary: "Revoke a token", Kinds: admins, h: s.deleteToken},

		{Method: http.MethodGet, Pattern: T + "/agents", Summary: "List agents with their status", Kinds: readers, Resp: list[agentView]{}, h: s.listAgents},
		{Method: http.MethodPost, Pattern: T + "/agents", Summary: "Register an agent; returns its agent token once", Kinds: admins, Body: createAgentReq{}, Resp: createdAgent{}, h: s.createAgent},
		{Method: http.MethodGet, Pattern: T + "/agents/{agent}", Summary: "Get an agent", Kinds: readers, Resp: agentView{}, h: s.getAgent},
		{Method: http.MethodDelete, Pattern: T + "/agents/{agent}", Summary: "Delete an agent with its tokens, policies and commands", Kinds: admins, h: s.deleteAgent},
		{Method: http.MethodGet, Pattern: T + "/agents/{agent}/policy", Summary: "An agent's effective policy (YAML with ?format=yaml)", Kinds: readers, Query: []string{"format"}, Resp: policyDoc{}, h: s.getAgentPolicy},
		{Method: http.MethodGet, Pattern: T + "/agents/{agent}/commands", Summary: "An agent's commands, newest first", Kinds: readers, Query: []string{"limit"}, Resp: list[store.Command]{}, h: s.listCommands},
		{Method: http.MethodPost, Pattern: T + "/agents/{agent}/terminal/ticket", Summary: "A single-use ticket (valid 30 s) to open the agent's web terminal with", Kinds: readers, Resp: ticketResp{}, h: s.terminalTicket},
		{Method: http.MethodPost, Pattern: T + "/agents/{agent}/commands", Summary: "Queue a command (409 while one is unfinished)", Kinds: admins, Body: commandReq{}, Resp: store.Command{}, h: s.createCommand},

		{Method: http.MethodGet, Pattern: T + "/policies", Summary: "List domain policies", Kinds: readers, Query: []string{"agent_id"}, Resp: list[store.Policy]{}, h: s.listPolicies},
		{Method: http.MethodPost, Pattern: T + "/policies", Summary: "Create a domain policy", Kinds: admins, Body: policyReq{}, Resp: store.Policy{}, h: s.createPolicy},
		{Method: http.MethodGet, Pattern: T + "/policies/{policy}", Summary: "Get a domain policy", Kinds: readers, Resp: store.Policy{}, h: s.getPolicy},
		{Method: http.MethodPut, Pattern: T + "/policies/{policy}", Summary: "Replace a domain policy's entry or enabled flag", Kinds: admins, Body: policyReq{}, Resp: store.Policy{}, h: s.updatePolicy},
		{Method: http.MethodDelete, Pattern: T + "/policies/{policy}", Summary: "Delete a domain policy", Kinds: admins, h: s.deletePolicy},

		{Method: http.MethodGet, Pattern: T + "/secrets", Summary: "List secrets (names and versions, never values)", Kinds: readers, Resp: list[store.Secret]{}, h: s.listSecrets},
		{Method: http.MethodPut, Pattern: T + "/secrets/{name}", Summary: "Create or replace a secret (write-only)", Kinds: admins, Body: secretReq{}, Resp: store.Secret{}, h: s.putSecret},
		{Method: http.MethodPost, Pattern: T + "/secrets/{name}/rotate", Summary: "Rotate an existing secret to a new value", Kinds: admins, Body: secretReq{}, Resp: store.Secret{}, h: s.rotateSecret},
		{Method: http.MethodDelete, Pattern: T + "/secrets/{name}", Summary: "Delete a secret", Kinds: admins, h: s.deleteSecret},

		{Method: http.MethodGet, Pattern: T + "/ip-acls", Summary: "List the tenant's IP ACL (empty: any address)", Kinds: admins, Resp: list[store.ACL]{}, h: s.listACLs},
		{Method: http.MethodPost, Pattern: T + "/ip-acls", Summary: "Allow admin and dev tokens from a CIDR", Kinds: admins, Body: aclReq{}, Resp: store.ACL{}, h: s.createACL},
		{Method: http.MethodDelete, Pattern: T + "/ip-acls/{acl}", Summary: "Remove an IP ACL entry", Kinds: admins, h: s.deleteACL},

		{Method: http.MethodGet, Pattern: T + "/audit", Summary: "Query the tenant's audit trail", Kinds: admins,
			Query: []string{"actor", "action", "object_type", "object_id", "since", "until", "limit"}, Resp: list[store.AuditEntry]{}, h: s.queryAudit},
		{Method: http.MethodGet, Pattern: T + "/logs", Summary: "Query agent logs", Kinds: readers,
			Query: []string{"agent_id", "type", "q", "since", "until", "limit"}, Resp: list[store.LogEntry]{}, h: s.queryLogs},

		{Method: http.MethodGet, Pattern: v1 + "/agent/policy", Summary: "The calling agent's effective policy (YAML; JSON with ?format=json)", Kinds: agentOnly, Query: []string{"format"}, Resp: policyDoc{}, h: s.agentPolicy},
		{Method: http.MethodGet, Pattern: v1 + "/agent/secrets/{name}", Summary: "A secret referenced by the calling agent's policy", Kinds: agentOnly, Resp: agentSecretResp{}, h: s.agentSecret},
		{Method: http.MethodPost, Pattern: v1 + "/agent/heartbeat", Summary: "Report status and metrics; returns the pending command", Kinds: agentOnly, Body: heartbeatReq{}, Resp: heartbeatResp{}, h: s.heartbeat},
		{Method: http.MethodPost, Pattern: v1 + "/agent/logs", Summary: "Ingest a batch of log entries", Kinds: agentOnly, Body: logsReq{}, Resp: acceptedResp{}, h: s.ingestLogs},
	}
}

// outsideRoutes are served by their own handlers (StreamHandler,
// EnrollHandler) rather than the route table's mux: the stream needs the
// hub and the upgrade, enrolment the CA. They are in the OpenAPI document
// all the same; Mount is the one place that serves them.
func outsideRoutes() []Route {
	return []Route{
		{Method: http.MethodGet, Pattern: wire.Path, Kinds: agentOnly, WebSocket: true,
			Summary: "The data plane's one connection: a WebSocket (Upgrade: websocket) carrying JSON messages (see x-websocket); the agent is the calling token's, never named in the request"},
		{Method: http.MethodGet, Pattern: TerminalPattern, Kinds: readers, WebSocket: true, Query: []string{"ticket", "cols", "rows"},
			Summary: "A shell in the agent's sandbox: a WebSocket (same-origin Origin required) authenticated by ?ticket= from POST .../terminal/ticket, relayed over the agent's stream to this replica (409 when the agent is not connected here)"},
		{Method: http.MethodPost, Pattern: EnrollPath, Kinds: agentOnly, Body: enrollReq{}, Resp: enrollResp{},
			Summary: "Get the calling agent's mTLS client certificate for a PEM certificate request (once per agent; 409 after; 404 unless agent mTLS is on)"},
	}
}

// Mount serves everything under /api/ on mux: the route table, the agent
// stream and, when ca is not nil, enrolment. It returns the patterns it
// mounted outside the route table, so tests can check each one is in the
// OpenAPI document.
func (s *Server) Mount(mux *http.ServeMux, hub *Hub, opt StreamOptions, ca *agentca.CA) []string {
	mux.Handle("/api/", s.Handler())
	mux.Handle(wire.Path, s.StreamHandler(hub, opt))
	s.termHub = hub
	mux.Handle(http.MethodGet+" "+TerminalPattern, s.TerminalHandler(hub))
	out := []string{wire.Path, TerminalPattern}
	if ca != nil {
		mux.Handle(EnrollPath, s.EnrollHandler(ca))
		out = append(out, EnrollPath)
	}
	return out
}
