// Package wire is the message format of the one connection between a data
// plane and the control plane (a WebSocket at GET /api/v1/agent/stream,
// authenticated with the agent token). Every message is one JSON object
// with a "type".
//
// Control plane to data plane: "state" (the effective policy and the values
// of the secrets it references; sent on connect, on every change and at
// least every ResyncInterval), "command" (start, stop, restart or wipe),
// "heartbeat_ack", "logs_ack" and "error".
//
// Data plane to control plane: "heartbeat" (status, metrics and command
// results) and "logs" (a batch of audit events from the on-disk spool; the
// entries carry consecutive sequence numbers of the spool, which the
// control plane uses as idempotency keys, so a batch sent twice is stored
// once).
package wire

import (
	"encoding/json"
	"time"
)

// Path is the streaming endpoint.
const Path = "/api/v1/agent/stream"

// Message types.
const (
	TypeState        = "state"
	TypeCommand      = "command"
	TypeHeartbeat    = "heartbeat"
	TypeHeartbeatAck = "heartbeat_ack"
	TypeLogs         = "logs"
	TypeLogsAck      = "logs_ack"
	TypeError        = "error"
)

// Limits.
const (
	// MaxMessage bounds one message in either direction.
	MaxMessage = 2 << 20
	// MaxLogBatch is the most entries in one logs message.
	MaxLogBatch = 500
	// ResyncInterval: the control plane re-sends the state at least this
	// often, so a missed change notification heals by itself.
	ResyncInterval = 30 * time.Second
)

// Msg is every message; fields are used by the types noted.
type Msg struct {
	Type string `json:"type"`

	// state
	PolicyYAML string            `json:"policy_yaml,omitempty"`
	Secrets    map[string]string `json:"secrets,omitempty"`
	// Version identifies the state's content (a hash); equal versions
	// mean equal policy and secrets.
	Version string `json:"version,omitempty"`

	// command
	Command *Command `json:"command,omitempty"`

	// heartbeat
	Status  string          `json:"status,omitempty"`
	Metrics json.RawMessage `json:"metrics,omitempty"`
	Results []Result        `json:"command_results,omitempty"`

	// logs and logs_ack: Entries[i] has sequence number FirstSeq+i of the
	// spool Spool; the ack names the last sequence number stored.
	Spool    string            `json:"spool,omitempty"`
	FirstSeq uint64            `json:"first_seq,omitempty"`
	LastSeq  uint64            `json:"last_seq,omitempty"`
	Entries  []json.RawMessage `json:"entries,omitempty"`

	// error
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// Command is a lifecycle command for the data plane.
type Command struct {
	ID            string `json:"id"`
	Command       string `json:"command"` // start, stop, restart, wipe
	WipeWorkspace bool   `json:"wipe_workspace,omitempty"`
}

// Result reports a command's outcome.
type Result struct {
	ID     string `json:"id"`
	Status string `json:"status"` // succeeded or failed
	Result string `json:"result,omitempty"`
}

// Command results.
const (
	Succeeded = "succeeded"
	Failed    = "failed"
)
