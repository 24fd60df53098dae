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

// TestAnonymousParams: numbered parameters used once each in order become "?"; anything else
// (a repeat, a gap, an order change) keeps its numbers, and literals are never touched.
func TestAnonymousParams(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`INSERT INTO t VALUES ($1, $2), ($3, $4)`, `INSERT INTO t VALUES (?, ?), (?, ?)`},
		{`SELECT a FROM t WHERE b = '$1' AND c = $1`, `SELECT a FROM t WHERE b = '$1' AND c = ?`},
		{`SELECT "$x" FROM t WHERE b = 'it''s' AND c = $1 AND d = $2`, `SELECT "$x" FROM t WHERE b = 'it''s' AND c = ? AND d = ?`},
		{`SELECT a FROM t WHERE b = $1 OR c = $1`, `SELECT a FROM t WHERE b = $1 OR c = $1`},
		{`SELECT a FROM t WHERE b = $2 AND c = $1`, `SELECT a FROM t WHERE b = $2 AND c = $1`},
		{`SELECT a FROM t WHERE b = $1 AND c = $3`, `SELECT a FROM t WHERE b = $1 AND c = $3`},
		{`SELECT $`, `SELECT $`},
		{`SELECT 'unterminated $1`, `SELECT 'unterminated $1`},
		{`VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`, `VALUES (?,?,?,?,?,?,?,?,?,?,?)`},
	} {
		if got := anonymousParams(c.in); got != c.want {
			t.Errorf("anonymousParams(%q) = %q, want %q", c.in, got, c.want)
		}
	}

	// The rewritten statement binds the same arguments in the same places.
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sc := &stmtCache{db: db, m: map[string]*sql.Stmt{}}
	st, err := sc.get(context.Background(), `SELECT $1 || '$2' || $2 || $3`)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := st.QueryRow("a", "b", "c").Scan(&got); err != nil || got != "a$2bc" {
		t.Fatalf("got %q, %v; want a$2bc", got, err)
	}
}
