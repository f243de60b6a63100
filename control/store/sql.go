package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

// SQL implements Store on SQLite or PostgreSQL.
type SQL struct {
	w, r     *sql.DB // writer and readers; the same pool on PostgreSQL
	postgres bool
	now      func() time.Time
	// Prepared statements by query text: parsing SQL dominated the cost
	// of the small, frequent queries (heartbeats, token lookups).
	wstmts, rstmts *sync.Map
	// txn is set on the Store that InTx passes to its function: every
	// statement then runs in that transaction.
	txn *sql.Tx
}

var _ Store = (*SQL)(nil)

// Open connects to dsn ("sqlite:PATH" or "postgres://..."), applies the
// migrations and returns the store. now is the clock (time.Now if nil).
func Open(ctx context.Context, dsn string, now func() time.Time) (*SQL, error) {
	if now == nil {
		now = time.Now
	}
	s := &SQL{now: now, wstmts: &sync.Map{}, rstmts: &sync.Map{}}
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(dsn, "sqlite:")
		path = strings.TrimPrefix(path, "//")
		if path == "" {
			return nil, errors.New("sqlite: empty path")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		q := "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
		u := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q
		w, err := sql.Open("sqlite", u)
		if err != nil {
			return nil, err
		}
		// SQLite has one writer at a time; one connection avoids busy waits.
		w.SetMaxOpenConns(1)
		r, err := sql.Open("sqlite", u+"&_pragma=query_only(1)")
		if err != nil {
			w.Close()
			return nil, err
		}
		r.SetMaxOpenConns(4)
		s.w, s.r = w, r
		if err := w.PingContext(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			s.Close()
			return nil, err
		}
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(16)
		db.SetMaxIdleConns(16)
		s.w, s.r, s.postgres = db, db, true
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("postgres: %w", err)
		}
	default:
		return nil, fmt.Errorf("database %q: use sqlite:PATH or postgres://...", dsn)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *SQL) Close() error {
	for _, m := range []*sync.Map{s.wstmts, s.rstmts} {
		m.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
	}
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// Postgres reports whether the store is on PostgreSQL.
func (s *SQL) Postgres() bool { return s.postgres }

// DB returns the writer pool, for tests that inspect raw rows.
func (s *SQL) DB() *sql.DB { return s.w }

// rebind turns ? placeholders into PostgreSQL's $n.
func (s *SQL) rebind(q string) string {
	if !s.postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// prepared returns the cached statement for q on db, bound to the
// transaction when the store is one.
func (s *SQL) prepared(ctx context.Context, db *sql.DB, cache *sync.Map, q string) (*sql.Stmt, error) {
	if s.txn != nil {
		// Statements of a transaction come from the writer's cache.
		db, cache = s.w, s.wstmts
	}
	var st *sql.Stmt
	if v, ok := cache.Load(q); ok {
		st = v.(*sql.Stmt)
	} else if s.txn != nil {
		// Not on db: on SQLite the transaction holds its only connection.
		// The statement closes with the transaction.
		return s.txn.PrepareContext(ctx, s.rebind(q))
	} else {
		var err error
		st, err = db.PrepareContext(ctx, s.rebind(q))
		if err != nil {
			return nil, err
		}
		if prev, loaded := cache.LoadOrStore(q, st); loaded {
			st.Close()
			st = prev.(*sql.Stmt)
		}
	}
	if s.txn != nil {
		return s.txn.StmtContext(ctx, st), nil
	}
	return st, nil
}

func (s *SQL) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := s.prepared(ctx, s.w, s.wstmts, q)
	if err != nil {
		return nil, mapErr(err)
	}
	res, err := st.ExecContext(ctx, args...)
	return res, mapErr(err)
}

func (s *SQL) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.prepared(ctx, s.r, s.rstmts, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// row is a *sql.Row or the error of preparing it.
type row struct {
	r   *sql.Row
	err error
}

func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	return r.r.Scan(dest...)
}

func (s *SQL) queryRow(ctx context.Context, q string, args ...any) row {
	st, err := s.prepared(ctx, s.r, s.rstmts, q)
	if err != nil {
		return row{err: err}
	}
	return row{r: st.QueryRowContext(ctx, args...)}
}

func (s *SQL) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.txn != nil {
		return fn(s.txn)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return mapErr(err)
	}
	return mapErr(tx.Commit())
}

func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return fmt.Errorf("%w: %s", ErrConflict, pe.ConstraintName)
	}
	if strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

func affected(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// NewID returns a random 128-bit id in hex.
func NewID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func jsonText(r json.RawMessage) string {
	if len(r) == 0 {
		return ""
	}
	return string(r)
}

func rawJSON(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// InTx runs fn with a Store whose every statement runs in one
// transaction, committed when fn returns nil. fn must use only that Store:
// on SQLite the transaction holds the one writer connection.
func (s *SQL) InTx(ctx context.Context, fn func(Store) error) error {
	if s.txn != nil {
		return fn(s)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		c := *s
		c.txn = tx
		return fn(&c)
	})
}

// --- meta ---

func (s *SQL) SetMetaOnce(ctx context.Context, key, value string) (bool, error) {
	res, err := s.exec(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, value)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// --- tenants ---

func (s *SQL) CreateTenant(ctx context.Context, t Tenant) error {
	_, err := s.exec(ctx, `INSERT INTO tenants (id, name, created_at, deleted) VALUES (?, ?, ?, 0)`, t.ID, t.Name, ns(t.CreatedAt))
	return err
}

func (s *SQL) GetTenant(ctx context.Context, id string) (Tenant, error) {
	var t Tenant
	var c int64
	err := s.queryRow(ctx, `SELECT id, name, created_at FROM tenants WHERE id = ? AND deleted = 0`, id).Scan(&t.ID, &t.Name, &c)
	t.CreatedAt = fromNS(c)
	return t, mapErr(err)
}

func (s *SQL) ListTenants(ctx context.Context) ([]Tenant, error) {
	rows, err := s.query(ctx, `SELECT id, name, created_at FROM tenants WHERE deleted = 0 ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Tenant{}
	for rows.Next() {
		var t Tenant
		var c int64
		if err := rows.Scan(&t.ID, &t.Name, &c); err != nil {
			return nil, err
		}
		t.CreatedAt = fromNS(c)
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *SQL) DeleteTenant(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.rebind(`UPDATE tenants SET deleted = 1 WHERE id = ? AND deleted = 0`), id)
		if err := affected(res, err); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.rebind(`UPDATE tokens SET disabled = 1 WHERE tenant_id = ?`), id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.rebind(`UPDATE agents SET disabled = 1 WHERE tenant_id = ?`), id)
		return err
	})
}

// CountTenant counts with one constant query per kind (no SQL is built
// from the argument).
func (s *SQL) CountTenant(ctx context.Context, tenantID string, kind Countable) (int, error) {
	var q string
	switch kind {
	case CountAgents:
		q = `SELECT COUNT(*) FROM agents WHERE tenant_id = ?`
	case CountTokens:
		q = `SELECT COUNT(*) FROM tokens WHERE tenant_id = ?`
	case CountPolicies:
		q = `SELECT COUNT(*) FROM policies WHERE tenant_id = ?`
	case CountSecrets:
		q = `SELECT COUNT(*) FROM secrets WHERE tenant_id = ?`
	case CountACLs:
		q = `SELECT COUNT(*) FROM ip_acls WHERE tenant_id = ?`
	default:
		return 0, fmt.Errorf("count: unknown kind %d", kind)
	}
	var n int
	err := s.queryRow(ctx, q, tenantID).Scan(&n)
	return n, err
}

// --- tokens ---

const tokenCols = `id, tenant_id, kind, name, agent_id, salt, hash, disabled, expires_at, created_at`

func scanToken(sc interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var dis int
	var exp, c int64
	err := sc.Scan(&t.ID, &t.TenantID, &t.Kind, &t.Name, &t.AgentID, &t.Salt, &t.Hash, &dis, &exp, &c)
	t.Disabled, t.ExpiresAt, t.CreatedAt = dis != 0, fromNS(exp), fromNS(c)
	return t, mapErr(err)
}

func (s *SQL) CreateToken(ctx context.Context, t Token) error {
	_, err := s.exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.TenantID, t.Kind, t.Name, t.AgentID, t.Salt, t.Hash, b2i(t.Disabled), ns(t.ExpiresAt), ns(t.CreatedAt))
	return err
}

func (s *SQL) GetTokenForAuth(ctx context.Context, id string) (Token, error) {
	var t Token
	var dis, active, open int
	var exp, c int64
	err := s.queryRow(ctx, `SELECT t.id, t.tenant_id, t.kind, t.name, t.agent_id, t.salt, t.hash, t.disabled, t.expires_at, t.created_at,
		CASE WHEN a.id IS NOT NULL AND a.disabled = 0 THEN 1 ELSE 0 END,
		CASE WHEN a.id IS NOT NULL AND EXISTS (SELECT 1 FROM commands c WHERE c.agent_id = a.id AND c.tenant_id = a.tenant_id AND c.done = 0) THEN 1 ELSE 0 END
		FROM tokens t LEFT JOIN agents a ON a.id = t.agent_id AND a.tenant_id = t.tenant_id WHERE t.id = ?
		AND ((t.tenant_id = '' AND t.kind = 'superadmin') OR EXISTS (SELECT 1 FROM tenants tn WHERE tn.id = t.tenant_id AND tn.deleted = 0))`, id).
		Scan(&t.ID, &t.TenantID, &t.Kind, &t.Name, &t.AgentID, &t.Salt, &t.Hash, &dis, &exp, &c, &active, &open)
	t.Disabled, t.ExpiresAt, t.CreatedAt, t.AgentActive, t.OpenCommand = dis != 0, fromNS(exp), fromNS(c), active != 0, open != 0
	return t, mapErr(err)
}

func (s *SQL) GetToken(ctx context.Context, tenantID, id string) (Token, error) {
	return scanToken(s.queryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = ? AND tenant_id = ?`, id, tenantID))
}

func (s *SQL) ListTokens(ctx context.Context, tenantID string) ([]Token, error) {
	rows, err := s.query(ctx, `SELECT `+tokenCols+` FROM tokens WHERE tenant_id = ? ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *SQL) UpdateToken(ctx context.Context, tenantID, id string, disabled *bool, expiresAt *time.Time) (Token, error) {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if disabled != nil {
			res, err := tx.ExecContext(ctx, s.rebind(`UPDATE tokens SET disabled = ? WHERE id = ? AND tenant_id = ?`), b2i(*disabled), id, tenantID)
			if err := affected(res, err); err != nil {
				return err
			}
		}
		if expiresAt != nil {
			res, err := tx.ExecContext(ctx, s.rebind(`UPDATE tokens SET expires_at = ? WHERE id = ? AND tenant_id = ?`), ns(*expiresAt), id, tenantID)
			if err := affected(res, err); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Token{}, err
	}
	return s.GetToken(ctx, tenantID, id)
}

func (s *SQL) DeleteToken(ctx context.Context, tenantID, id string) error {
	return affected(s.exec(ctx, `DELETE FROM tokens WHERE id = ? AND tenant_id = ?`, id, tenantID))
}

// --- agents ---

const agentCols = `id, tenant_id, name, disabled, created_at, last_heartbeat, status, metrics`

func scanAgent(sc interface{ Scan(...any) error }) (Agent, error) {
	var a Agent
	var dis int
	var c, hb int64
	var m string
	err := sc.Scan(&a.ID, &a.TenantID, &a.Name, &dis, &c, &hb, &a.Status, &m)
	a.Disabled, a.CreatedAt, a.LastHeartbeat, a.Metrics = dis != 0, fromNS(c), fromNS(hb), rawJSON(m)
	return a, mapErr(err)
}

func (s *SQL) CreateAgent(ctx context.Context, a Agent) error {
	_, err := s.exec(ctx, `INSERT INTO agents (`+agentCols+`) VALUES (?, ?, ?, ?, ?, 0, '', '')`,
		a.ID, a.TenantID, a.Name, b2i(a.Disabled), ns(a.CreatedAt))
	return err
}

func (s *SQL) GetAgent(ctx context.Context, tenantID, id string) (Agent, error) {
	return scanAgent(s.queryRow(ctx, `SELECT `+agentCols+` FROM agents WHERE id = ? AND tenant_id = ?`, id, tenantID))
}

func (s *SQL) ListAgents(ctx context.Context, tenantID string) ([]Agent, error) {
	rows, err := s.query(ctx, `SELECT `+agentCols+` FROM agents WHERE tenant_id = ? ORDER BY name`, tenantID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *SQL) DeleteAgent(ctx context.Context, tenantID, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.rebind(`DELETE FROM agents WHERE id = ? AND tenant_id = ?`), id, tenantID)
		if err := affected(res, err); err != nil {
			return err
		}
		for _, q := range []string{
			`DELETE FROM tokens WHERE agent_id = ? AND tenant_id = ?`,
			`DELETE FROM policies WHERE agent_id = ? AND tenant_id = ?`,
			`DELETE FROM commands WHERE agent_id = ? AND tenant_id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, s.rebind(q), id, tenantID); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *SQL) Heartbeat(ctx context.Context, tenantID, agentID string, at time.Time, status string, metrics json.RawMessage) (bool, error) {
	st, err := s.prepared(ctx, s.w, s.wstmts, `UPDATE agents SET last_heartbeat = ?, status = ?, metrics = ? WHERE id = ? AND tenant_id = ?
		RETURNING (SELECT COUNT(*) FROM commands c WHERE c.agent_id = agents.id AND c.tenant_id = agents.tenant_id AND c.done = 0)`)
	if err != nil {
		return false, err
	}
	var n int
	err = st.QueryRowContext(ctx, ns(at), status, jsonText(metrics), agentID, tenantID).Scan(&n)
	return n > 0, mapErr(err)
}

// hbChunk bounds the rows of one batched UPDATE.
const hbChunk = 400 // SQLite allows at most 500 terms in a compound SELECT

func (s *SQL) HeartbeatBatch(ctx context.Context, hs []HeartbeatUpdate) error {
	if len(hs) == 0 {
		return nil
	}
	if s.postgres {
		// One prepared statement over arrays: no per-batch SQL to parse.
		n := len(hs)
		ids, tenants, stats, mets := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		ats := make([]int64, n)
		for i, h := range hs {
			ids[i], tenants[i], ats[i], stats[i], mets[i] = h.AgentID, h.TenantID, ns(h.At), h.Status, jsonText(h.Metrics)
		}
		return s.InTx(ctx, func(st Store) error {
			t := st.(*SQL)
			// Heartbeats are ephemeral: not waiting for the WAL flush keeps
			// the batch off the disk's critical path; a crash loses at most
			// the last second of them.
			if _, err := t.txn.ExecContext(ctx, `SET LOCAL synchronous_commit TO OFF`); err != nil {
				return err
			}
			_, err := t.exec(ctx, `UPDATE agents SET last_heartbeat = v.at, status = v.status, metrics = v.metrics
				FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS BIGINT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[])) AS v(id, tenant_id, at, status, metrics)
				WHERE agents.id = v.id AND agents.tenant_id = v.tenant_id AND agents.last_heartbeat < v.at`, ids, tenants, ats, stats, mets)
			return err
		})
	}
	// SQLite: one UPDATE ... FROM (SELECT ... UNION ALL ...) per chunk, a
	// statement per chunk rather than per agent.
	return s.tx(ctx, func(tx *sql.Tx) error {
		for len(hs) > 0 {
			n := min(len(hs), hbChunk)
			var b strings.Builder
			args := make([]any, 0, 5*n)
			b.WriteString(`UPDATE agents SET last_heartbeat = v.at, status = v.status, metrics = v.metrics FROM (`)
			for i, h := range hs[:n] {
				if i > 0 {
					b.WriteString(" UNION ALL ")
				}
				b.WriteString(`SELECT CAST(? AS TEXT) AS id, CAST(? AS TEXT) AS tenant_id, CAST(? AS BIGINT) AS at, CAST(? AS TEXT) AS status, CAST(? AS TEXT) AS metrics`)
				args = append(args, h.AgentID, h.TenantID, ns(h.At), h.Status, jsonText(h.Metrics))
			}
			b.WriteString(`) AS v WHERE agents.id = v.id AND agents.tenant_id = v.tenant_id AND agents.last_heartbeat < v.at`)
			if _, err := tx.ExecContext(ctx, s.rebind(b.String()), args...); err != nil {
				return err
			}
			hs = hs[n:]
		}
		return nil
	})
}

func (s *SQL) HasOpenCommand(ctx context.Context, tenantID, agentID string) (bool, error) {
	var n int
	err := s.queryRow(ctx, `SELECT COUNT(*) FROM commands WHERE tenant_id = ? AND agent_id = ? AND done = 0`, tenantID, agentID).Scan(&n)
	return n > 0, err
}

// --- policies ---

const policyCols = `id, tenant_id, agent_id, domain, entry, enabled, created_at, updated_at`

func scanPolicy(sc interface{ Scan(...any) error }) (Policy, error) {
	var p Policy
	var en int
	var c, u int64
	var e string
	err := sc.Scan(&p.ID, &p.TenantID, &p.AgentID, &p.Domain, &e, &en, &c, &u)
	p.Entry, p.Enabled, p.CreatedAt, p.UpdatedAt = rawJSON(e), en != 0, fromNS(c), fromNS(u)
	return p, mapErr(err)
}

func (s *SQL) policies(ctx context.Context, q string, args ...any) ([]Policy, error) {
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Policy{}
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

func (s *SQL) CreatePolicy(ctx context.Context, p Policy) error {
	_, err := s.exec(ctx, `INSERT INTO policies (`+policyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.TenantID, p.AgentID, p.Domain, jsonText(p.Entry), b2i(p.Enabled), ns(p.CreatedAt), ns(p.UpdatedAt))
	return err
}

func (s *SQL) GetPolicy(ctx context.Context, tenantID, id string) (Policy, error) {
	return scanPolicy(s.queryRow(ctx, `SELECT `+policyCols+` FROM policies WHERE id = ? AND tenant_id = ?`, id, tenantID))
}

func (s *SQL) ListPolicies(ctx context.Context, tenantID string, agentID *string) ([]Policy, error) {
	if agentID == nil {
		return s.policies(ctx, `SELECT `+policyCols+` FROM policies WHERE tenant_id = ? ORDER BY agent_id, domain`, tenantID)
	}
	return s.policies(ctx, `SELECT `+policyCols+` FROM policies WHERE tenant_id = ? AND agent_id = ? ORDER BY domain`, tenantID, *agentID)
}

func (s *SQL) UpdatePolicy(ctx context.Context, p Policy) (Policy, error) {
	err := affected(s.exec(ctx, `UPDATE policies SET domain = ?, entry = ?, enabled = ?, updated_at = ? WHERE id = ? AND tenant_id = ?`,
		p.Domain, jsonText(p.Entry), b2i(p.Enabled), ns(p.UpdatedAt), p.ID, p.TenantID))
	if err != nil {
		return Policy{}, err
	}
	return s.GetPolicy(ctx, p.TenantID, p.ID)
}

func (s *SQL) DeletePolicy(ctx context.Context, tenantID, id string) error {
	return affected(s.exec(ctx, `DELETE FROM policies WHERE id = ? AND tenant_id = ?`, id, tenantID))
}

func (s *SQL) PoliciesForAgent(ctx context.Context, tenantID, agentID string) ([]Policy, error) {
	// Both conditions are bound to tenantID: the seed's leak came from a
	// tenant-wide branch that forgot the tenant.
	return s.policies(ctx, `SELECT `+policyCols+` FROM policies
		WHERE tenant_id = ? AND enabled = 1 AND (agent_id = '' OR agent_id = ?) ORDER BY domain, agent_id`, tenantID, agentID)
}

// --- secrets ---

const secretCols = `id, tenant_id, name, key_id, sealed, version, created_at, updated_at`

func scanSecret(sc interface{ Scan(...any) error }) (Secret, error) {
	var x Secret
	var sealed string
	var c, u int64
	err := sc.Scan(&x.ID, &x.TenantID, &x.Name, &x.KeyID, &sealed, &x.Version, &c, &u)
	if err != nil {
		return x, mapErr(err)
	}
	x.CreatedAt, x.UpdatedAt = fromNS(c), fromNS(u)
	x.Sealed, err = base64.StdEncoding.DecodeString(sealed)
	return x, err
}

func (s *SQL) secrets(ctx context.Context, q string, args ...any) ([]Secret, error) {
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Secret{}
	for rows.Next() {
		x, err := scanSecret(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

func (s *SQL) PutSecret(ctx context.Context, x Secret) (Secret, bool, error) {
	created := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.rebind(`UPDATE secrets SET key_id = ?, sealed = ?, version = version + 1, updated_at = ? WHERE tenant_id = ? AND name = ?`),
			x.KeyID, base64.StdEncoding.EncodeToString(x.Sealed), ns(x.UpdatedAt), x.TenantID, x.Name)
		if err := affected(res, err); err == nil || !errors.Is(err, ErrNotFound) {
			return err
		}
		created = true
		_, err = tx.ExecContext(ctx, s.rebind(`INSERT INTO secrets (`+secretCols+`) VALUES (?, ?, ?, ?, ?, 1, ?, ?)`),
			x.ID, x.TenantID, x.Name, x.KeyID, base64.StdEncoding.EncodeToString(x.Sealed), ns(x.CreatedAt), ns(x.UpdatedAt))
		return err
	})
	if err != nil {
		return Secret{}, false, err
	}
	got, err := s.getSecretW(ctx, x.TenantID, x.Name)
	return got, created, err
}

func (s *SQL) ReplaceSecret(ctx context.Context, x Secret) (Secret, error) {
	err := affected(s.exec(ctx, `UPDATE secrets SET key_id = ?, sealed = ?, version = version + 1, updated_at = ? WHERE tenant_id = ? AND name = ?`,
		x.KeyID, base64.StdEncoding.EncodeToString(x.Sealed), ns(x.UpdatedAt), x.TenantID, x.Name))
	if err != nil {
		return Secret{}, err
	}
	return s.getSecretW(ctx, x.TenantID, x.Name)
}

// getSecretW reads through the writer, so a read right after a write sees it.
func (s *SQL) getSecretW(ctx context.Context, tenantID, name string) (Secret, error) {
	q := `SELECT ` + secretCols + ` FROM secrets WHERE tenant_id = ? AND name = ?`
	if s.txn != nil {
		return scanSecret(s.queryRow(ctx, q, tenantID, name))
	}
	return scanSecret(s.w.QueryRowContext(ctx, s.rebind(q), tenantID, name))
}

func (s *SQL) GetSecret(ctx context.Context, tenantID, name string) (Secret, error) {
	return scanSecret(s.queryRow(ctx, `SELECT `+secretCols+` FROM secrets WHERE tenant_id = ? AND name = ?`, tenantID, name))
}

func (s *SQL) ListSecrets(ctx context.Context, tenantID string) ([]Secret, error) {
	return s.secrets(ctx, `SELECT `+secretCols+` FROM secrets WHERE tenant_id = ? ORDER BY name`, tenantID)
}

func (s *SQL) ListAllSecrets(ctx context.Context) ([]Secret, error) {
	return s.secrets(ctx, `SELECT `+secretCols+` FROM secrets ORDER BY tenant_id, name`)
}

func (s *SQL) DeleteSecret(ctx context.Context, tenantID, name string) error {
	return affected(s.exec(ctx, `DELETE FROM secrets WHERE tenant_id = ? AND name = ?`, tenantID, name))
}

func (s *SQL) Reseal(ctx context.Context, id, oldKeyID, newKeyID string, sealed []byte) error {
	return affected(s.exec(ctx, `UPDATE secrets SET key_id = ?, sealed = ? WHERE id = ? AND key_id = ?`,
		newKeyID, base64.StdEncoding.EncodeToString(sealed), id, oldKeyID))
}

// --- IP ACLs ---

func (s *SQL) CreateACL(ctx context.Context, a ACL) error {
	_, err := s.exec(ctx, `INSERT INTO ip_acls (id, tenant_id, cidr, description, created_at) VALUES (?, ?, ?, ?, ?)`,
		a.ID, a.TenantID, a.CIDR, a.Description, ns(a.CreatedAt))
	return err
}

func (s *SQL) ListACLs(ctx context.Context, tenantID string) ([]ACL, error) {
	rows, err := s.query(ctx, `SELECT id, tenant_id, cidr, description, created_at FROM ip_acls WHERE tenant_id = ? ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ACL{}
	for rows.Next() {
		var a ACL
		var c int64
		if err := rows.Scan(&a.ID, &a.TenantID, &a.CIDR, &a.Description, &c); err != nil {
			return nil, err
		}
		a.CreatedAt = fromNS(c)
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *SQL) DeleteACL(ctx context.Context, tenantID, id string) error {
	return affected(s.exec(ctx, `DELETE FROM ip_acls WHERE id = ? AND tenant_id = ?`, id, tenantID))
}

// --- commands ---

const commandCols = `id, tenant_id, agent_id, kind, wipe_workspace, status, result, created_by, created_at, updated_at`

func scanCommand(sc interface{ Scan(...any) error }) (Command, error) {
	var c Command
	var wipe int
	var cr, up int64
	err := sc.Scan(&c.ID, &c.TenantID, &c.AgentID, &c.Kind, &wipe, &c.Status, &c.Result, &c.CreatedBy, &cr, &up)
	c.WipeWorkspace, c.CreatedAt, c.UpdatedAt = wipe != 0, fromNS(cr), fromNS(up)
	return c, mapErr(err)
}

func (s *SQL) CreateCommand(ctx context.Context, c Command) error {
	_, err := s.exec(ctx, `INSERT INTO commands (id, tenant_id, agent_id, kind, wipe_workspace, status, done, result, created_by, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, 0, '', ?, ?, ?)`,
		c.ID, c.TenantID, c.AgentID, c.Kind, b2i(c.WipeWorkspace), CmdPending, c.CreatedBy, ns(c.CreatedAt), ns(c.CreatedAt))
	return err
}

func (s *SQL) ListCommands(ctx context.Context, tenantID, agentID string, limit int) ([]Command, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.query(ctx, `SELECT `+commandCols+` FROM commands WHERE tenant_id = ? AND agent_id = ? ORDER BY created_at DESC, id LIMIT ?`, tenantID, agentID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Command{}
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func (s *SQL) NextCommand(ctx context.Context, tenantID, agentID string, at time.Time) (*Command, error) {
	c, err := scanCommand(s.queryRow(ctx, `SELECT `+commandCols+` FROM commands WHERE tenant_id = ? AND agent_id = ? AND done = 0`, tenantID, agentID))
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if c.Status == CmdPending {
		if _, err := s.exec(ctx, `UPDATE commands SET status = ?, updated_at = ? WHERE id = ? AND status = ?`, CmdDelivered, ns(at), c.ID, CmdPending); err != nil {
			return nil, err
		}
		c.Status, c.UpdatedAt = CmdDelivered, at
	}
	return &c, nil
}

func (s *SQL) CompleteCommand(ctx context.Context, tenantID, agentID, id, status, result string, at time.Time) error {
	return affected(s.exec(ctx, `UPDATE commands SET status = ?, result = ?, done = 1, updated_at = ? WHERE id = ? AND tenant_id = ? AND agent_id = ? AND done = 0`,
		status, result, ns(at), id, tenantID, agentID))
}

// --- audit ---

func (s *SQL) AppendAudit(ctx context.Context, e AuditEntry) error {
	if e.ID == "" {
		e.ID = NewID()
	}
	d := jsonText(e.Detail)
	if d == "" {
		d = "{}"
	}
	_, err := s.exec(ctx, `INSERT INTO audit_log (id, ts, tenant_id, actor_id, actor_kind, action, object_type, object_id, remote_addr, request_id, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, ns(e.TS), e.TenantID, e.ActorID, e.ActorKind, e.Action, e.ObjectType, e.ObjectID, e.RemoteAddr, e.RequestID, d)
	return err
}

func (s *SQL) QueryAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if !f.AllTenants {
		add("tenant_id = ?", f.TenantID)
	} else if f.TenantID != "" {
		add("tenant_id = ?", f.TenantID)
	}
	if f.ActorID != "" {
		add("actor_id = ?", f.ActorID)
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.ObjectType != "" {
		add("object_type = ?", f.ObjectType)
	}
	if f.ObjectID != "" {
		add("object_id = ?", f.ObjectID)
	}
	if !f.Since.IsZero() {
		add("ts >= ?", ns(f.Since))
	}
	if !f.Until.IsZero() {
		add("ts < ?", ns(f.Until))
	}
	q := `SELECT id, ts, tenant_id, actor_id, actor_kind, action, object_type, object_id, remote_addr, request_id, detail FROM audit_log`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY ts DESC, id LIMIT ?"
	args = append(args, clampLimit(f.Limit))
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		var ts int64
		var d string
		if err := rows.Scan(&e.ID, &ts, &e.TenantID, &e.ActorID, &e.ActorKind, &e.Action, &e.ObjectType, &e.ObjectID, &e.RemoteAddr, &e.RequestID, &d); err != nil {
			return nil, err
		}
		e.TS, e.Detail = fromNS(ts), rawJSON(d)
		out = append(out, e)
	}
	return out, rows.Err()
}

func clampLimit(n int) int {
	if n <= 0 || n > 1000 {
		if n <= 0 {
			return 100
		}
		return 1000
	}
	return n
}

// --- logs ---

func (s *SQL) InsertLogs(ctx context.Context, entries []LogEntry) error {
	if len(entries) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, s.rebind(`INSERT INTO logs (id, tenant_id, agent_id, ts, received_at, type, data) VALUES (?, ?, ?, ?, ?, ?, ?)`))
		if err != nil {
			return err
		}
		defer st.Close()
		for _, e := range entries {
			if e.ID == "" {
				e.ID = NewID()
			}
			if _, err := st.ExecContext(ctx, e.ID, e.TenantID, e.AgentID, ns(e.TS), ns(e.ReceivedAt), e.Type, jsonText(e.Data)); err != nil {
				return err
			}
		}
		return nil
	})
}

// likeEscape escapes LIKE wildcards so user text matches literally.
func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

func (s *SQL) QueryLogs(ctx context.Context, f LogFilter) ([]LogEntry, error) {
	where := []string{"tenant_id = ?"}
	args := []any{f.TenantID}
	if f.AgentID != "" {
		where, args = append(where, "agent_id = ?"), append(args, f.AgentID)
	}
	if f.Type != "" {
		where, args = append(where, "type = ?"), append(args, f.Type)
	}
	if f.Contains != "" {
		where, args = append(where, `lower(data) LIKE ? ESCAPE '\'`), append(args, "%"+likeEscape(strings.ToLower(f.Contains))+"%")
	}
	if !f.Since.IsZero() {
		where, args = append(where, "ts >= ?"), append(args, ns(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "ts < ?"), append(args, ns(f.Until))
	}
	args = append(args, clampLimit(f.Limit))
	rows, err := s.query(ctx, `SELECT id, tenant_id, agent_id, ts, received_at, type, data FROM logs WHERE `+
		strings.Join(where, " AND ")+` ORDER BY ts DESC, id LIMIT ?`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []LogEntry{}
	for rows.Next() {
		var e LogEntry
		var ts, rc int64
		var d string
		if err := rows.Scan(&e.ID, &e.TenantID, &e.AgentID, &ts, &rc, &e.Type, &d); err != nil {
			return nil, err
		}
		e.TS, e.ReceivedAt, e.Data = fromNS(ts), fromNS(rc), rawJSON(d)
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *SQL) DeleteLogsBefore(ctx context.Context, t time.Time) (int64, error) {
	res, err := s.exec(ctx, `DELETE FROM logs WHERE received_at < ?`, ns(t))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
