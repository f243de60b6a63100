// Package store is the control plane's persistence: one schema, applied by
// versioned migrations at start, on embedded SQLite (modernc.org/sqlite, no
// cgo) or PostgreSQL (pgx). Every method that reads or changes a tenant's
// object takes the tenant id and filters on it, so a caller cannot reach
// another tenant's rows by id alone.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Errors returned by the store.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// Countable names the tenant objects that have quotas.
type Countable int

// Countable kinds.
const (
	CountAgents Countable = iota
	CountTokens
	CountPolicies
	CountSecrets
	CountACLs
)

// Token kinds.
const (
	KindSuperadmin = "superadmin"
	KindAdmin      = "admin"
	KindDev        = "dev"
	KindAgent      = "agent"
)

// Tenant is an isolated customer space.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Token is an API token's stored form: never the token itself.
type Token struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id,omitempty"` // empty for superadmin tokens
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	AgentID   string    `json:"agent_id,omitempty"` // agent tokens only
	Salt      string    `json:"-"`
	Hash      string    `json:"-"`
	Disabled  bool      `json:"disabled"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	CreatedAt time.Time `json:"created_at"`
	// AgentActive is set by GetTokenForAuth: the token's agent exists in
	// its tenant and is enabled.
	AgentActive bool `json:"-"`
	// OpenCommand is set by GetTokenForAuth for agent tokens: the agent has
	// an unfinished command (saves heartbeats a second query).
	OpenCommand bool `json:"-"`
}

// Agent is a data plane registered with the control plane.
type Agent struct {
	ID            string          `json:"id"`
	TenantID      string          `json:"tenant_id"`
	Name          string          `json:"name"`
	Disabled      bool            `json:"disabled"`
	CreatedAt     time.Time       `json:"created_at"`
	LastHeartbeat time.Time       `json:"last_heartbeat,omitzero"`
	Status        string          `json:"status,omitempty"`
	Metrics       json.RawMessage `json:"metrics,omitempty"`
}

// HeartbeatUpdate is one agent's latest heartbeat.
type HeartbeatUpdate struct {
	TenantID, AgentID string
	At                time.Time
	Status            string
	Metrics           json.RawMessage
}

// Policy is one domain entry, tenant-wide (AgentID "") or for one agent.
type Policy struct {
	ID        string          `json:"id"`
	TenantID  string          `json:"tenant_id"`
	AgentID   string          `json:"agent_id,omitempty"`
	Domain    string          `json:"domain"`
	Entry     json.RawMessage `json:"entry"` // a policy.Domain as JSON
	Enabled   bool            `json:"enabled"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// Secret is an encrypted value; Sealed is AES-GCM output under key KeyID.
type Secret struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	Name      string    `json:"name"`
	KeyID     string    `json:"-"`
	Sealed    []byte    `json:"-"`
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ACL is one CIDR from which a tenant's admin and dev tokens may be used.
type ACL struct {
	ID          string    `json:"id"`
	TenantID    string    `json:"tenant_id"`
	CIDR        string    `json:"cidr"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// Command states.
const (
	CmdPending   = "pending"
	CmdDelivered = "delivered"
	CmdSucceeded = "succeeded"
	CmdFailed    = "failed"
)

// Command is an instruction for an agent (start, stop, restart, wipe).
type Command struct {
	ID            string    `json:"id"`
	TenantID      string    `json:"tenant_id"`
	AgentID       string    `json:"agent_id"`
	Kind          string    `json:"command"`
	WipeWorkspace bool      `json:"wipe_workspace,omitempty"`
	Status        string    `json:"status"`
	Result        string    `json:"result,omitempty"`
	CreatedBy     string    `json:"created_by,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// AuditEntry records one change: who, what, when, from where.
type AuditEntry struct {
	ID         string          `json:"id"`
	TS         time.Time       `json:"ts"`
	TenantID   string          `json:"tenant_id,omitempty"`
	ActorID    string          `json:"actor_token_id"`
	ActorKind  string          `json:"actor_kind"`
	Action     string          `json:"action"`
	ObjectType string          `json:"object_type"`
	ObjectID   string          `json:"object_id,omitempty"`
	RemoteAddr string          `json:"remote_addr"`
	RequestID  string          `json:"request_id"`
	Detail     json.RawMessage `json:"detail,omitempty"`
}

// AuditFilter selects audit entries. Zero fields match everything, except
// that TenantID is always applied when AllTenants is false.
type AuditFilter struct {
	TenantID   string
	AllTenants bool
	ActorID    string
	Action     string
	ObjectType string
	ObjectID   string
	Since      time.Time
	Until      time.Time
	Limit      int
}

// LogEntry is one data-plane log record.
type LogEntry struct {
	ID         string          `json:"id"`
	TenantID   string          `json:"tenant_id"`
	AgentID    string          `json:"agent_id"`
	TS         time.Time       `json:"ts"`
	ReceivedAt time.Time       `json:"received_at"`
	Type       string          `json:"type,omitempty"`
	Data       json.RawMessage `json:"data"`
}

// LogFilter selects log entries of one tenant.
type LogFilter struct {
	TenantID string
	AgentID  string
	Type     string
	Contains string
	Since    time.Time
	Until    time.Time
	Limit    int
}

// Store is the control plane's persistence.
type Store interface {
	// InTx runs fn in one transaction (a change and its audit record).
	InTx(ctx context.Context, fn func(Store) error) error

	// Meta: SetMetaOnce stores key=value unless key exists; reports whether it did.
	SetMetaOnce(ctx context.Context, key, value string) (bool, error)

	CreateTenant(ctx context.Context, t Tenant) error
	// CountTenant counts a tenant's objects of one kind (a Count*
	// constant), for quotas.
	CountTenant(ctx context.Context, tenantID string, kind Countable) (int, error)
	GetTenant(ctx context.Context, id string) (Tenant, error)
	ListTenants(ctx context.Context) ([]Tenant, error)
	// DeleteTenant hides the tenant and disables its tokens and agents.
	DeleteTenant(ctx context.Context, id string) error

	CreateToken(ctx context.Context, t Token) error
	// GetTokenForAuth loads any token by id, for authentication only,
	// with AgentActive and OpenCommand set, in one query. A token of a
	// deleted tenant (or a tenant-less token that is not a superadmin's)
	// is ErrNotFound: deleting a tenant disables its tokens, but one
	// created by a request racing the deletion would otherwise work.
	GetTokenForAuth(ctx context.Context, id string) (Token, error)
	GetToken(ctx context.Context, tenantID, id string) (Token, error)
	ListTokens(ctx context.Context, tenantID string) ([]Token, error)
	UpdateToken(ctx context.Context, tenantID, id string, disabled *bool, expiresAt *time.Time) (Token, error)
	DeleteToken(ctx context.Context, tenantID, id string) error

	CreateAgent(ctx context.Context, a Agent) error
	GetAgent(ctx context.Context, tenantID, id string) (Agent, error)
	ListAgents(ctx context.Context, tenantID string) ([]Agent, error)
	// DeleteAgent removes the agent with its tokens, policies and commands.
	DeleteAgent(ctx context.Context, tenantID, id string) error
	// HeartbeatBatch records many heartbeats in one transaction; updates
	// for agents that no longer exist are ignored.
	HeartbeatBatch(ctx context.Context, hs []HeartbeatUpdate) error
	// HasOpenCommand reports whether the agent has an unfinished command.
	HasOpenCommand(ctx context.Context, tenantID, agentID string) (bool, error)
	// Heartbeat records a heartbeat and reports whether the agent has an
	// unfinished command, in one statement.
	Heartbeat(ctx context.Context, tenantID, agentID string, at time.Time, status string, metrics json.RawMessage) (pending bool, err error)

	CreatePolicy(ctx context.Context, p Policy) error
	GetPolicy(ctx context.Context, tenantID, id string) (Policy, error)
	// ListPolicies lists a tenant's entries; agentID nil = all, "" = tenant-wide only.
	ListPolicies(ctx context.Context, tenantID string, agentID *string) ([]Policy, error)
	UpdatePolicy(ctx context.Context, p Policy) (Policy, error)
	DeletePolicy(ctx context.Context, tenantID, id string) error
	// PoliciesForAgent returns the enabled tenant-wide entries of tenantID
	// and the enabled entries of agentID in tenantID, nothing else.
	PoliciesForAgent(ctx context.Context, tenantID, agentID string) ([]Policy, error)

	// PutSecret creates or replaces a secret; it reports whether it created.
	PutSecret(ctx context.Context, s Secret) (Secret, bool, error)
	// ReplaceSecret replaces an existing secret's value (ErrNotFound otherwise).
	ReplaceSecret(ctx context.Context, s Secret) (Secret, error)
	GetSecret(ctx context.Context, tenantID, name string) (Secret, error)
	ListSecrets(ctx context.Context, tenantID string) ([]Secret, error)
	DeleteSecret(ctx context.Context, tenantID, name string) error
	// ListAllSecrets returns every tenant's secrets, for key rotation.
	ListAllSecrets(ctx context.Context) ([]Secret, error)
	// Reseal replaces a secret's ciphertext if it is still sealed under oldKeyID.
	Reseal(ctx context.Context, id, oldKeyID, newKeyID string, sealed []byte) error

	CreateACL(ctx context.Context, a ACL) error
	ListACLs(ctx context.Context, tenantID string) ([]ACL, error)
	DeleteACL(ctx context.Context, tenantID, id string) error

	// CreateCommand fails with ErrConflict while the agent has an unfinished command.
	CreateCommand(ctx context.Context, c Command) error
	ListCommands(ctx context.Context, tenantID, agentID string, limit int) ([]Command, error)
	// NextCommand returns the agent's unfinished command, marking it delivered.
	NextCommand(ctx context.Context, tenantID, agentID string, at time.Time) (*Command, error)
	// CompleteCommand records a result for an unfinished command of the agent.
	CompleteCommand(ctx context.Context, tenantID, agentID, id, status, result string, at time.Time) error

	AppendAudit(ctx context.Context, e AuditEntry) error
	QueryAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)

	InsertLogs(ctx context.Context, entries []LogEntry) error
	QueryLogs(ctx context.Context, f LogFilter) ([]LogEntry, error)
	DeleteLogsBefore(ctx context.Context, t time.Time) (int64, error)

	Close() error
}
