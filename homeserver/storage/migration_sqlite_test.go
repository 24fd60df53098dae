package storage

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestForwardExtremitiesWithoutRowid replays migration 0019 on a SQLite forward_extremities table
// in its earlier (rowid) form holding rows: the rows survive, and the table becomes WITHOUT ROWID
// with the same primary key. PostgreSQL runs none of its statements.
func TestForwardExtremitiesWithoutRowid(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Backend: "sqlite", SQLitePath: filepath.Join(t.TempDir(), "hs.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var schema string
	if err := s.read.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE name = 'forward_extremities'`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(schema, "WITHOUT ROWID") {
		t.Fatalf("forward_extremities after the migrations: %s", schema)
	}
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	m := ms[18]
	if m.version != 19 {
		t.Fatalf("migration 19 is %d_%s", m.version, m.name)
	}
	err = s.Write(ctx, func(c Conn) error {
		for _, stmt := range []string{
			`DROP TABLE forward_extremities`,
			`CREATE TABLE forward_extremities (room_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (room_id, event_id))`,
			`INSERT INTO forward_extremities VALUES ('!a:x', '$1'), ('!a:x', '$2'), ('!b:x', '$3')`,
		} {
			if _, err := c.q.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		for _, stmt := range splitStatements(s.dialect.ddl(m.sql)) {
			if _, err := c.q.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for room, want := range map[string]string{"!a:x": "$1 $2", "!b:x": "$3"} {
		got, err := s.Read().ForwardExtremities(ctx, room)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("%s after the migration: %v, %v; want %s", room, got, err, want)
		}
	}
	if err := s.Write(ctx, func(c Conn) error {
		_, err := c.q.ExecContext(ctx, `INSERT INTO forward_extremities VALUES ('!a:x', '$1')`)
		return err
	}); err == nil {
		t.Fatal("a repeated key was stored")
	}
	if stmts := splitStatements(postgresDialect{}.ddl(m.sql)); len(stmts) != 0 {
		t.Fatalf("migration 19 runs %d statements on PostgreSQL", len(stmts))
	}
}
