// Package service is the scaffolding shared by the standalone services
// (`cagent proxy`, `cagent dns`): the logger chosen by --log-format, the
// policy watcher, the audit sink and the admin endpoints. Each Run keeps
// its own listeners and order of start-up.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/policywatch"
)

// Logger is the service's logger: JSON for --log-format json, else text.
func Logger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// WatchPolicy starts watching the policy file at path (see
// policywatch.Watch). When the first load fails, each policy error is logged
// on its own line and the error says which file it was.
func WatchPolicy(ctx context.Context, path string, log *slog.Logger, onChange func(*policy.Policy)) (*policywatch.Watcher, error) {
	w, err := policywatch.Watch(ctx, path, log, onChange)
	if err != nil {
		var perrs policy.Errors
		if errors.As(err, &perrs) {
			for _, e := range perrs {
				log.Error("invalid policy", "err", e.Error())
			}
		}
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return w, nil
}

// AuditConfig says where a service's audit events go.
type AuditConfig struct {
	// File is one audit file (--audit-log). When empty, events go to
	// rotating files in Dir, sized and kept by MaxSize and Retention.
	File string
	// DashIsStdout makes File "-" mean Stdout alone (`cagent dns`).
	DashIsStdout bool
	Dir          string
	MaxSize      int64
	Retention    time.Duration
	// JSON also writes every event to Stdout (--log-format json).
	JSON   bool
	Stdout io.Writer
	// OnError is called once with the first write error (see audit.NewQueue).
	OnError func(error)
}

// Audit is an open audit sink: events are encoded and written by one
// goroutine (audit.Queue), off the caller's path.
type Audit struct {
	*audit.Queue
	path string // the file, the rotating directory, or "-"
	rot  *audit.Rotating
	file interface{ Close() error }
}

// OpenAudit opens the sink cfg describes. A file whose chain is broken is
// refused (audit.OpenFile).
func OpenAudit(cfg AuditConfig) (*Audit, error) {
	a := &Audit{path: cfg.File}
	var sink audit.Sink
	switch {
	case cfg.File == "-" && cfg.DashIsStdout:
		a.Queue = audit.NewQueue(audit.NewWriter(cfg.Stdout, "", nil), cfg.OnError)
		return a, nil
	case cfg.File != "":
		fs, err := audit.OpenFile(cfg.File)
		if err != nil {
			return nil, err
		}
		sink, a.file = fs, fs
	default:
		r, err := audit.OpenRotating(audit.RotatingConfig{Dir: cfg.Dir, MaxSize: cfg.MaxSize, Retention: cfg.Retention})
		if err != nil {
			return nil, err
		}
		sink, a.file, a.rot, a.path = r, r, r, cfg.Dir
	}
	if cfg.JSON {
		// The file first: stdout is a copy.
		sink = audit.Multi(sink, audit.NewWriter(cfg.Stdout, "", nil))
	}
	a.Queue = audit.NewQueue(sink, cfg.OnError)
	return a, nil
}

// Path is the audit file, the directory of rotating files, or "-".
func (a *Audit) Path() string { return a.path }

// SetLimits applies a reloaded policy's audit section to rotating files.
func (a *Audit) SetLimits(pol *policy.Policy) {
	if a.rot != nil {
		a.rot.SetLimits(int64(pol.Audit.MaxSize), pol.Audit.Retention.D())
	}
}

// Close writes what is queued, then closes the file.
func (a *Audit) Close() error {
	a.Queue.Close()
	if a.file != nil {
		return a.file.Close()
	}
	return nil
}

// NewRegistry is a per-instance metrics registry with the Go runtime and
// process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// AdminConfig is what the admin server serves.
type AdminConfig struct {
	Metrics *prometheus.Registry
	// Ready reports why the service cannot serve yet (503), nil when it can.
	Ready func() error
	// LastReload, if set, reports the last failed policy reload: the
	// service is still ready, serving the last good policy, and says so.
	LastReload func() error
}

// NewAdmin is the admin server: /healthz, /readyz and /metrics.
func NewAdmin(cfg AdminConfig) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := cfg.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if cfg.LastReload != nil {
			if err := cfg.LastReload(); err != nil {
				fmt.Fprintf(w, "ready (last policy reload failed: %v)\n", err)
				return
			}
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{}))
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// Flag is a ready flag for AdminConfig.Ready: not ready until Set(true).
type Flag struct {
	ok  atomic.Bool
	msg string
}

// NewFlag is a flag that reports msg while not set.
func NewFlag(msg string) *Flag { return &Flag{msg: msg} }

// Set sets the flag.
func (f *Flag) Set(ok bool) { f.ok.Store(ok) }

// Err is nil when set.
func (f *Flag) Err() error {
	if f.ok.Load() {
		return nil
	}
	return errors.New(f.msg)
}
