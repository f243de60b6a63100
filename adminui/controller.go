package adminui

import (
	"context"
	"io"
	"time"

	"github.com/cagent-dev/cagent/policy"
)

// Controller is what the admin API steers: the data plane's sandbox and
// components. The daemon package implements it; the API knows nothing else
// about how the sandbox is run.
type Controller interface {
	Status(ctx context.Context) Status
	// Start, Stop and Restart act on the agent's sandbox. A stopped sandbox
	// stays stopped until started again.
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Restart(ctx context.Context) error
	// Wipe recreates the sandbox from scratch; emptyWorkspace also deletes
	// the contents of the workspace directory.
	Wipe(ctx context.Context, emptyWorkspace bool) error
	// Exec starts a process inside the running sandbox.
	Exec(ctx context.Context, req ExecRequest) (Process, error)
}

// ExecRequest describes a process to start in the sandbox.
type ExecRequest struct {
	Cmd  []string // nil: the sandbox user's login shell
	TTY  bool
	Cols uint16
	Rows uint16
}

// Process is a process running in the sandbox. With a TTY, Read returns
// the terminal's output and Write feeds its input.
type Process interface {
	io.Reader
	io.Writer
	Resize(cols, rows uint16) error
	// Wait returns the exit status once the process has ended.
	Wait() (int, error)
	// Close kills the process if it still runs and releases its resources.
	Close() error
}

// Status is the data plane's state for the dashboard.
type Status struct {
	Agent      string            `json:"agent"`
	StartedAt  time.Time         `json:"started_at"`
	Components []ComponentStatus `json:"components"`
}

// Component states.
const (
	StateRunning  = "running"
	StateStarting = "starting"
	StateStopped  = "stopped" // stopped on purpose; stays stopped
	StateCrashed  = "crashed" // failed; being restarted
	StateFailed   = "failed"  // failed and not restartable (e.g. bad config)
)

// ComponentStatus is one supervised part: "sandbox", "proxy", "dns".
type ComponentStatus struct {
	Name      string            `json:"name"`
	State     string            `json:"state"`
	Healthy   bool              `json:"healthy"`
	Message   string            `json:"message,omitempty"`
	Restarts  int               `json:"restarts"`
	Since     time.Time         `json:"since"`
	LastError string            `json:"last_error,omitempty"`
	Info      map[string]string `json:"info,omitempty"`
}

// PolicySource is the running policy and the result of the last reload;
// *policywatch.Watcher implements it.
type PolicySource interface {
	Current() *policy.Policy
	LastError() error
	Reload() error
}
