// Package storagetest runs tests against every storage backend: embedded SQLite in a temporary
// directory, and PostgreSQL in a throwaway database created on the server named by
// HS_TEST_POSTGRES_DSN (scripts/test.sh starts one). Without that variable the PostgreSQL runs are
// skipped locally and fail under CI, so CI can never silently test one backend only.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver for creating test databases

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Backends are the storage backends every storage and API test runs on.
var Backends = []string{"sqlite", "postgres"}

// EnvPostgresDSN names the variable holding a superuser DSN of the test PostgreSQL server.
const EnvPostgresDSN = "HS_TEST_POSTGRES_DSN"

// ForEachBackend runs fn as a subtest per backend, each with a fresh, migrated store.
func ForEachBackend(t *testing.T, fn func(t *testing.T, s *storage.Store)) {
	t.Helper()
	for _, b := range Backends {
		t.Run(b, func(t *testing.T) {
			fn(t, Open(t, b))
		})
	}
}

// Options returns storage options for a fresh, empty database of the backend, removed when the test
// ends.
func Options(t testing.TB, backend string) storage.Options {
	t.Helper()
	switch backend {
	case "sqlite":
		return storage.Options{Backend: "sqlite", SQLitePath: filepath.Join(t.TempDir(), "test.db"), MaxOpenConns: 4}
	case "postgres":
		return storage.Options{Backend: "postgres", PostgresDSN: NewPostgresDatabase(t), MaxOpenConns: 8}
	}
	t.Fatalf("storagetest: unknown backend %q", backend)
	return storage.Options{}
}

// Open returns a fresh, migrated store of the backend, closed when the test ends.
func Open(t testing.TB, backend string) *storage.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := storage.Open(ctx, Options(t, backend))
	if err != nil {
		t.Fatalf("storagetest: open %s: %v", backend, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// RequireBackend skips t when the backend's database is not there (PostgreSQL without
// HS_TEST_POSTGRES_DSN), or fails it under CI. A test whose subtests start servers on t (which
// must then skip t itself, not a subtest) calls it before them.
func RequireBackend(t testing.TB, backend string) {
	t.Helper()
	if backend != "postgres" || os.Getenv(EnvPostgresDSN) != "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("storagetest: %s is not set under CI; run the tests with scripts/test.sh", EnvPostgresDSN)
	}
	t.Skipf("storagetest: %s not set; PostgreSQL tests skipped (scripts/test.sh sets it)", EnvPostgresDSN)
}

// NewPostgresDatabase creates an empty database on the test server and returns its DSN. The database
// is dropped when the test ends.
func NewPostgresDatabase(t testing.TB) string {
	t.Helper()
	RequireBackend(t, "postgres")
	admin := os.Getenv(EnvPostgresDSN)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "hs_test_" + hex.EncodeToString(b[:])
	db, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatalf("storagetest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		db.Close()
		t.Fatalf("storagetest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		db.Close()
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("storagetest: bad %s: %v", EnvPostgresDSN, err)
	}
	u.Path = "/" + name
	return u.String()
}
