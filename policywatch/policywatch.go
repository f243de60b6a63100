// Package policywatch keeps a policy file loaded: it re-reads it on SIGHUP and
// whenever the file changes, applies a new policy only when it is valid, and
// keeps the running one (logging every error) when it is not.
package policywatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cagent-dev/cagent/policy"
	"github.com/fsnotify/fsnotify"
)

// debounce coalesces the burst of events an editor's save produces.
const debounce = 100 * time.Millisecond

// Watcher holds the current policy of one file.
type Watcher struct {
	path  string
	log   *slog.Logger
	apply func(*policy.Policy)

	mu      sync.Mutex // serializes reloads so apply sees policies in order
	current atomic.Pointer[policy.Policy]
	lastErr atomic.Pointer[errBox]

	cancel context.CancelFunc
	done   chan struct{}
	fsw    *fsnotify.Watcher
}

type errBox struct{ err error }

// Watch parses path (which must succeed), calls apply with it, and then
// reloads on SIGHUP and on changes to the file until ctx ends or Close is
// called. The directory is watched, not the file, so editors that save by
// renaming a new file over the old one are seen too.
func Watch(ctx context.Context, path string, log *slog.Logger, apply func(*policy.Policy)) (*Watcher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if apply == nil {
		apply = func(*policy.Policy) {}
	}
	p, err := policy.ParseFile(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("policywatch: %w", err)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("policywatch: %w", err)
	}
	if err := fsw.Add(filepath.Dir(abs)); err != nil {
		fsw.Close()
		return nil, fmt.Errorf("policywatch: watch %s: %w", filepath.Dir(abs), err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{path: path, log: log, apply: apply, cancel: cancel, done: make(chan struct{}), fsw: fsw}
	w.current.Store(p)
	apply(p)
	// Registered before Watch returns, so a SIGHUP sent right after can
	// never take the default action (terminating the process).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go w.loop(ctx, abs, hup)
	return w, nil
}

func (w *Watcher) loop(ctx context.Context, abs string, hup chan os.Signal) {
	defer close(w.done)
	defer w.fsw.Close()
	defer signal.Stop(hup)

	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-hup:
			w.log.Info("policy reload requested", "trigger", "sighup", "file", w.path)
			_ = w.Reload()
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) != abs || ev.Op == fsnotify.Chmod {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(debounce)
			} else {
				timer.Reset(debounce)
			}
			fire = timer.C
		case <-fire:
			fire = nil
			if _, err := os.Stat(w.path); errors.Is(err, os.ErrNotExist) {
				// Mid-rename, or deleted: keep the running policy, wait for the file.
				continue
			}
			w.log.Info("policy reload requested", "trigger", "file_change", "file", w.path)
			_ = w.Reload()
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			w.log.Warn("policy watch error", "file", w.path, "err", err)
		}
	}
}

// Reload re-reads the file now. A valid policy is applied and becomes
// Current; an invalid one is logged error by error (FILE:LINE:COL form),
// recorded as LastError and returned, and the running policy stays.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, err := policy.ParseFile(w.path)
	if err != nil {
		var perrs policy.Errors
		if errors.As(err, &perrs) {
			for _, e := range perrs {
				w.log.Error("policy rejected; keeping the running policy", "file", w.path, "err", e.Error())
			}
		} else {
			w.log.Error("policy rejected; keeping the running policy", "file", w.path, "err", err.Error())
		}
		w.lastErr.Store(&errBox{err})
		return err
	}
	w.current.Store(p)
	w.lastErr.Store(nil)
	w.apply(p)
	w.log.Info("policy applied", "file", w.path, "domains", len(p.Domains))
	return nil
}

// Current returns the policy in force.
func (w *Watcher) Current() *policy.Policy { return w.current.Load() }

// LastError returns the error of the most recent reload, nil if it succeeded.
func (w *Watcher) LastError() error {
	if b := w.lastErr.Load(); b != nil {
		return b.err
	}
	return nil
}

// Close stops watching and waits for the watcher goroutine to exit.
func (w *Watcher) Close() {
	w.cancel()
	<-w.done
}
