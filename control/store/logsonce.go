package store

import (
	"context"
	"database/sql"
)

// InsertLogsOnce inserts entries whose ids are idempotency keys: an entry
// whose id is already stored is skipped, so a batch the data plane sends
// again (after a lost acknowledgement) is stored once. It returns how many
// entries were new. Used by the agent stream (CP2).
func (s *SQL) InsertLogsOnce(ctx context.Context, entries []LogEntry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	n := 0
	err := s.tx(ctx, func(tx *sql.Tx) error {
		n = 0
		st, err := tx.PrepareContext(ctx, s.rebind(`INSERT INTO logs (id, tenant_id, agent_id, ts, received_at, type, data) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`))
		if err != nil {
			return err
		}
		defer st.Close()
		for _, e := range entries {
			res, err := st.ExecContext(ctx, e.ID, e.TenantID, e.AgentID, ns(e.TS), ns(e.ReceivedAt), e.Type, jsonText(e.Data))
			if err != nil {
				return err
			}
			if k, err := res.RowsAffected(); err == nil {
				n += int(k)
			}
		}
		return nil
	})
	return n, err
}
