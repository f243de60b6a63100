// Package storetest opens throwaway control-plane stores for tests: SQLite in
// a temporary directory and PostgreSQL in a fresh schema that is dropped when
// the test ends, so tests run in parallel and leave nothing behind.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/internal/testutil"
)

// PostgresURL is the test server: $CAGENT_TEST_POSTGRES, else the CI default.
func PostgresURL() string {
	if u := os.Getenv("CAGENT_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// Kinds are the databases every storage test runs against.
var Kinds = []string{"sqlite", "postgres"}

// Each runs fn once per database kind as a parallel subtest.
func Each(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Helper()
	for _, k := range Kinds {
		t.Run(k, func(t *testing.T) {
			t.Parallel()
			fn(t, DSN(t, k))
		})
	}
}

// EachStore runs fn with a fresh open store per database kind.
func EachStore(t *testing.T, fn func(t *testing.T, s *store.SQL)) {
	t.Helper()
	Each(t, func(t *testing.T, dsn string) {
		s, err := store.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		fn(t, s)
	})
}

// DSN returns a fresh, empty database of the kind for this test.
func DSN(t testing.TB, kind string) string {
	t.Helper()
	switch kind {
	case "sqlite":
		return "sqlite:" + filepath.Join(t.TempDir(), "control.db")
	case "postgres":
		return PostgresSchema(t)
	}
	t.Fatalf("unknown database kind %q", kind)
	return ""
}

// PostgresSchema creates a schema t_<random>, drops it at cleanup and returns
// a DSN whose search_path points at it. It skips the test when PostgreSQL is
// unreachable, except under CI where it fails.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	base := PostgresURL()
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		if testutil.InCI() {
			t.Fatalf("PostgreSQL at %s: %v", base, err)
		}
		t.Skipf("PostgreSQL unreachable: %v", err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		db.Close()
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}
