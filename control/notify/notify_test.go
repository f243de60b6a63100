package notify_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/control/notify"
	"github.com/cagent-dev/cagent/control/store/storetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recorder struct {
	mu      sync.Mutex
	got     []string
	resyncs int
}

func (r *recorder) local(t, a string) { r.mu.Lock(); r.got = append(r.got, t+"/"+a); r.mu.Unlock() }
func (r *recorder) resync()           { r.mu.Lock(); r.resyncs++; r.mu.Unlock() }
func (r *recorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.got {
		if g == s {
			return true
		}
	}
	return false
}

func wait(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRelayBetweenReplicasAndAfterLostConnection(t *testing.T) {
	dsn := storetest.PostgresSchema(t)
	other := storetest.PostgresSchema(t) // another deployment in the same database
	ctx := context.Background()
	ra, rb, rc := &recorder{}, &recorder{}, &recorder{}
	a, err := notify.ListenPG(ctx, dsn, ra.local, ra.resync, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := notify.ListenPG(ctx, dsn, rb.local, rb.resync, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := notify.ListenPG(ctx, other, rc.local, rc.resync, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	a.Publish("t1", "a1")
	wait(t, "b hears a", func() bool { return rb.has("t1/a1") })
	// A different schema is a different channel.
	time.Sleep(200 * time.Millisecond)
	if rc.has("t1/a1") {
		t.Fatal("a deployment in another schema heard the change")
	}

	// B's listening connection dies: B reconnects, resyncs, hears again.
	db, err := sql.Open("pgx", storetest.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var killed int
	if err := db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN "cagent_changes_%' AND pid <> pg_backend_pid()`).Scan(&killed); err != nil || killed == 0 {
		t.Fatalf("terminating listeners: %d %v", killed, err)
	}
	wait(t, "b resyncs", func() bool { rb.mu.Lock(); defer rb.mu.Unlock(); return rb.resyncs > 0 })
	wait(t, "b hears after reconnecting", func() bool { a.Publish("t2", ""); return rb.has("t2/") })
}
