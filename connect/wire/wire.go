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
//
// Terminal sessions (a browser's shell in the sandbox, opened through the
// control plane's terminal endpoint) ride the same connection, multiplexed
// by a session id the control plane picks: "term_open" (cols, rows),
// "term_data" (both ways; Data is base64 in JSON, at most MaxTermData
// bytes), "term_resize" and "term_close" go down; "term_opened",
// "term_data" and "term_exit" (code, or error and message when the data
// plane refused or failed to start the shell) come up. Either side ends a
// session without disturbing the rest of the stream.
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

	TypeTermOpen   = "term_open"
	TypeTermOpened = "term_opened"
	TypeTermData   = "term_data"
	TypeTermResize = "term_resize"
	TypeTermClose  = "term_close"
	TypeTermExit   = "term_exit"
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
	// MaxTermData bounds the bytes of one term_data message; longer
	// input or output is split.
	MaxTermData = 16 << 10
	// MaxTermSessions bounds the open terminal sessions of one agent.
	MaxTermSessions = 4
	// MaxTermID bounds a session id.
	MaxTermID = 64
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

	// term_*: Session names the terminal session; Data is the pty's
	// input or output; Cols and Rows its size (term_open, term_resize);
	// Code the shell's exit status (term_exit).
	Session string `json:"session,omitempty"`
	Data    []byte `json:"data,omitempty"`
	Cols    uint16 `json:"cols,omitempty"`
	Rows    uint16 `json:"rows,omitempty"`
	Code    *int   `json:"code,omitempty"`

	// error (and a refused term_exit)
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// Terminal refusals (term_exit Error).
const (
	TermDisabled = "terminal_disabled" // the data plane's configuration forbids it
	TermBusy     = "terminal_busy"     // too many sessions
	TermFailed   = "terminal_failed"   // the shell could not be started
)

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
