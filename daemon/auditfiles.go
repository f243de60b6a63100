package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
)

// auditFiles is the daemon's audit log: one hash chain across rotated
// files <state>/audit/audit-<UTC time>.jsonl (audit.Rotating), with the
// size limit and retention of the running policy (audit.max_size,
// audit.retention). `cagent audit verify <state>/audit/*.jsonl` checks it.
type auditFiles struct {
	r *audit.Rotating
}

func openAuditFiles(dir string, p *policy.Policy, now func() time.Time) (*auditFiles, error) {
	cfg := audit.RotatingConfig{Dir: dir, Now: now}
	if p != nil {
		cfg.MaxSize, cfg.Retention = int64(p.Audit.MaxSize), p.Audit.Retention.D()
	}
	r, err := audit.OpenRotating(cfg)
	if errors.Is(err, audit.ErrBrokenChain) {
		// The damaged newest file is evidence: keep it under a name the
		// chain ignores, and start a new chain so the data plane can run.
		if aerr := setAsideNewest(dir, now()); aerr != nil {
			return nil, fmt.Errorf("%w (and setting it aside failed: %v)", err, aerr)
		}
		r, err = audit.OpenRotating(cfg)
		if err == nil {
			r.Emit(&audit.Event{Type: audit.TypeAdmin, Action: "audit_chain_restarted", Decision: audit.Deny,
				Reason: "the newest audit file did not verify; it was set aside as *.jsonl.broken-*"})
		}
	}
	if err != nil {
		return nil, err
	}
	return &auditFiles{r: r}, nil
}

func setAsideNewest(dir string, now time.Time) error {
	files, err := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if err != nil || len(files) == 0 {
		return errors.New("no audit file found")
	}
	sort.Strings(files)
	last := files[len(files)-1]
	return os.Rename(last, last+".broken-"+now.UTC().Format("20060102T150405Z"))
}

// setPolicy applies the policy's audit limits.
func (a *auditFiles) setPolicy(p *policy.Policy) {
	a.r.SetLimits(int64(p.Audit.MaxSize), p.Audit.Retention.D())
}

func (a *auditFiles) Emit(e *audit.Event) { a.r.Emit(e) }

func (a *auditFiles) Close() error { return a.r.Close() }
