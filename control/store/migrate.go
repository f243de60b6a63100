package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// migrations are applied in order, each once, in its own transaction. The
// SQL is common to SQLite and PostgreSQL: TEXT ids, BIGINT Unix nanoseconds,
// INTEGER 0/1 booleans, TEXT for JSON and base64. Never edit a released
// migration; append a new one.
var migrations = []string{
	// 1: initial schema.
	`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tenants (
	id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at BIGINT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX tenants_name ON tenants (name) WHERE deleted = 0;
CREATE TABLE tokens (
	id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
	agent_id TEXT NOT NULL, salt TEXT NOT NULL, hash TEXT NOT NULL, disabled INTEGER NOT NULL,
	expires_at BIGINT NOT NULL, created_at BIGINT NOT NULL);
CREATE INDEX tokens_tenant ON tokens (tenant_id);
CREATE TABLE agents (
	id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL, disabled INTEGER NOT NULL,
	created_at BIGINT NOT NULL, last_heartbeat BIGINT NOT NULL, status TEXT NOT NULL, metrics TEXT NOT NULL);
CREATE UNIQUE INDEX agents_name ON agents (tenant_id, name);
CREATE TABLE policies (
	id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, domain TEXT NOT NULL,
	entry TEXT NOT NULL, enabled INTEGER NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE UNIQUE INDEX policies_domain ON policies (tenant_id, agent_id, domain);
CREATE TABLE secrets (
	id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL, key_id TEXT NOT NULL,
	sealed TEXT NOT NULL, version INTEGER NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE UNIQUE INDEX secrets_name ON secrets (tenant_id, name);
CREATE TABLE ip_acls (
	id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, cidr TEXT NOT NULL, description TEXT NOT NULL,
	created_at BIGINT NOT NULL);
CREATE INDEX ip_acls_tenant ON ip_acls (tenant_id);
CREATE TABLE commands (
	id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, kind TEXT NOT NULL,
	wipe_workspace INTEGER NOT NULL, status TEXT NOT NULL, done INTEGER NOT NULL, result TEXT NOT NULL,
	created_by TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE UNIQUE INDEX commands_one_open ON commands (agent_id) WHERE done = 0;
CREATE INDEX commands_agent ON commands (tenant_id, agent_id, created_at);
CREATE TABLE audit_log (
	id TEXT PRIMARY KEY, ts BIGINT NOT NULL, tenant_id TEXT NOT NULL, actor_id TEXT NOT NULL,
	actor_kind TEXT NOT NULL, action TEXT NOT NULL, object_type TEXT NOT NULL, object_id TEXT NOT NULL,
	remote_addr TEXT NOT NULL, request_id TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX audit_tenant_ts ON audit_log (tenant_id, ts);
CREATE TABLE logs (
	id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, ts BIGINT NOT NULL,
	received_at BIGINT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX logs_tenant_ts ON logs (tenant_id, ts);
CREATE INDEX logs_received ON logs (received_at)`,
}

// SchemaVersion is the version the migrations bring a database to.
var SchemaVersion = len(migrations)

func (s *SQL) migrate(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for i, m := range migrations {
		v := i + 1
		if err := s.applyMigration(ctx, v, m); err != nil {
			return fmt.Errorf("migration %d: %w", v, err)
		}
	}
	return nil
}

func (s *SQL) applyMigration(ctx context.Context, v int, m string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if s.postgres {
		// Serialize concurrent starts against one database.
		if _, err := tx.ExecContext(ctx, `LOCK TABLE schema_migrations IN EXCLUSIVE MODE`); err != nil {
			return err
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, s.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), v).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	for _, stmt := range strings.Split(m, ";\n") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%w\n%s", err, stmt)
		}
	}
	if _, err := tx.ExecContext(ctx, s.rebind(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), v, s.now().UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}

// Version returns the highest applied migration.
func (s *SQL) Version(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v)
	return int(v.Int64), err
}
