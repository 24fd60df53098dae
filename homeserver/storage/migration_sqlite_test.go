package storage

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestTransactionIDsWithoutRowid replays migration 0016 on a SQLite transaction_ids table in its
// earlier (rowid) form holding rows: the rows survive, and the table becomes WITHOUT ROWID with
// the same primary key.
func TestTransactionIDsWithoutRowid(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Backend: "sqlite", SQLitePath: filepath.Join(t.TempDir(), "hs.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var schema string
	if err := s.read.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE name = 'transaction_ids'`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(schema, "WITHOUT ROWID") {
		t.Fatalf("transaction_ids after the migrations: %s", schema)
	}
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	m := ms[15]
	if m.version != 16 {
		t.Fatalf("migration 16 is %d_%s", m.version, m.name)
	}
	err = s.Write(ctx, func(c Conn) error {
		for _, stmt := range []string{
			`DROP TABLE transaction_ids`,
			`CREATE TABLE transaction_ids (localpart TEXT NOT NULL, device_id TEXT NOT NULL, txn_id TEXT NOT NULL,
				event_id TEXT NOT NULL, created_ts BIGINT NOT NULL, PRIMARY KEY (localpart, device_id, txn_id))`,
			`INSERT INTO transaction_ids VALUES ('alice', 'D1', 't1', '$a', 1), ('bob', 'D2', 't1', '$b', 2)`,
		} {
			if _, err := c.q.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		stmts := splitStatements(s.dialect.ddl(m.sql))
		if len(stmts) != 4 {
			t.Errorf("migration 16 has %d statements on SQLite, want 4", len(stmts))
		}
		for _, stmt := range stmts {
			if _, err := c.q.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	found, err := s.Read().TransactionEvents(ctx, []Transaction{{Localpart: "alice", DeviceID: "D1", TxnID: "t1"}, {Localpart: "bob", DeviceID: "D2", TxnID: "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found[Transaction{Localpart: "alice", DeviceID: "D1", TxnID: "t1"}] != "$a" {
		t.Fatalf("rows after the migration: %v", found)
	}
	if err := s.Write(ctx, func(c Conn) error {
		return c.InsertTransactions(ctx, []Transaction{{Localpart: "alice", DeviceID: "D1", TxnID: "t1", EventID: "$x"}})
	}); err == nil {
		t.Fatal("a repeated key was stored")
	}
	// PostgreSQL skips the migration's statements: they are SQLite's only.
	if stmts := splitStatements(postgresDialect{}.ddl(m.sql)); len(stmts) != 0 {
		t.Fatalf("migration 16 runs %d statements on PostgreSQL", len(stmts))
	}
}
