package storage

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite"
)

// TestStatementAfterClose: a statement asked of a pool's cache after the cache closed (a
// goroutine finishing while the Store closes, its database still open) is an error, not a panic.
func TestStatementAfterClose(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sc := &stmtCache{db: db, m: map[string]*sql.Stmt{}}
	if _, err := sc.get(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	sc.close()
	if _, err := sc.get(context.Background(), "SELECT 2"); err == nil {
		t.Fatal("a statement was prepared after the cache closed")
	}
}
