// Package notify relays change notifications between control-plane
// replicas that share one PostgreSQL database, with LISTEN/NOTIFY: a
// change made through replica A wakes the data-plane streams connected to
// replica B. The channel name includes the schema, so deployments (and
// tests) sharing a database in different schemas do not hear each other.
package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// PG is a LISTEN/NOTIFY relay.
type PG struct {
	dsn     string
	channel string
	local   func(tenantID, agentID string)
	resync  func()
	log     *slog.Logger

	out    chan string
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ListenPG connects to dsn and starts relaying: notifications from other
// replicas call local; after the listening connection was lost and
// re-established (notifications may have been missed) it calls resync.
// It returns once the first LISTEN is in place.
func ListenPG(ctx context.Context, dsn string, local func(tenantID, agentID string), resync func(), log *slog.Logger) (*PG, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	var schema string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("notify: %w", err)
	}
	h := sha256.Sum256([]byte(schema))
	p := &PG{dsn: dsn, channel: "cagent_changes_" + hex.EncodeToString(h[:8]), local: local, resync: resync, log: log,
		out: make(chan string, 1024)}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{p.channel}.Sanitize()); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("notify: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.wg.Add(2)
	go p.listen(rctx, conn)
	go p.publish(rctx)
	return p, nil
}

// Publish tells the other replicas (and this one, which ignores nothing:
// a duplicate wake-up only recomputes an unchanged state). It never
// blocks; when the queue is full the notification is dropped and the
// streams' periodic resync heals it.
func (p *PG) Publish(tenantID, agentID string) {
	select {
	case p.out <- tenantID + "/" + agentID:
	default:
		p.log.Warn("change notification queue full; streams will resync")
	}
}

// Close stops relaying.
func (p *PG) Close() {
	p.cancel()
	p.wg.Wait()
}

func (p *PG) listen(ctx context.Context, conn *pgx.Conn) {
	defer p.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		if conn != nil {
			for {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					break
				}
				backoff = 100 * time.Millisecond
				t, a, ok := strings.Cut(n.Payload, "/")
				if ok {
					p.local(t, a)
				}
			}
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			cancel()
			conn = nil
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
		c, err := pgx.Connect(ctx, p.dsn)
		if err != nil {
			p.log.Warn("change notifications: reconnecting", "err", err)
			continue
		}
		if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{p.channel}.Sanitize()); err != nil {
			c.Close(ctx)
			continue
		}
		conn = c
		// Changes during the gap were not heard: every stream rechecks.
		if p.resync != nil {
			p.resync()
		}
	}
}

func (p *PG) publish(ctx context.Context) {
	defer p.wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			cancel()
		}
	}()
	for {
		var msg string
		select {
		case <-ctx.Done():
			return
		case msg = <-p.out:
		}
		for attempt := 0; attempt < 3; attempt++ {
			if conn == nil {
				c, err := pgx.Connect(ctx, p.dsn)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					p.log.Warn("change notifications: publish", "err", err)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				conn = c
			}
			_, err := conn.Exec(ctx, "SELECT pg_notify($1, $2)", p.channel, msg)
			if err == nil {
				break
			}
			if errors.Is(err, context.Canceled) {
				return
			}
			conn.Close(ctx)
			conn = nil
		}
	}
}
