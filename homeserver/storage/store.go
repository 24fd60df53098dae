// Package storage is the single store of the homeserver: one schema and one set of queries that run
// on both embedded SQLite and PostgreSQL. Dialect differences live in dialect.go only.
//
// Reads go through Store.Read; every change goes through Store.Write, which runs one transaction, so
// a change is never half-written. On SQLite the writer is a single connection (WAL mode) and readers
// use a separate pool; on PostgreSQL both share one pool.
package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotFound is returned when nothing matches.
var ErrNotFound = errors.New("storage: not found")

// ErrConflict is returned when a unique key is already taken.
var ErrConflict = errors.New("storage: conflict")

// ErrRetry is matched by errors of transactions the database aborted to break a deadlock (or a
// serialization failure): running them again succeeds. WriteRetry does so.
var ErrRetry = errors.New("storage: transaction aborted, retry")

// Options select and tune a backend.
type Options struct {
	Backend      string // "sqlite" or "postgres"
	SQLitePath   string // file path, or ":memory:" style paths are not supported (readers need a file)
	PostgresDSN  string
	MaxOpenConns int
}

// Store is the database.
type Store struct {
	write   *sql.DB
	read    *sql.DB
	dialect dialect
	// Prepared statements by query text, one cache per pool, for SQLite, which would otherwise
	// parse every statement again on every call (measured: ~15 % of the send path's CPU). pgx
	// caches prepared statements itself, so PostgreSQL has none (nil).
	writeStmts, readStmts *stmtCache
	// writeMu serialises write transactions on SQLite. They all run on writeConn, one connection
	// of the writer pool kept for them (taken on the first Write), with BEGIN IMMEDIATE and
	// COMMIT prepared once like every other statement: database/sql's transactions made the
	// driver parse both again for every transaction. The pool's second connection serves the
	// checkpointer.
	writeMu   sync.Mutex
	writeConn *sql.Conn
	// sqliteMoves collects the counter moves of the running SQLite transaction (under writeMu).
	sqliteMoves []positionMove
	// commits counts the write transactions this Store tried to commit (Commits).
	commits atomic.Uint64
	// written holds the counter values this Store's transactions committed (written.go).
	written written
	// stopCheckpoints ends the SQLite background checkpointer, which each commit wakes.
	stopCheckpoints chan struct{}
	checkpointsDone chan struct{}
	checkpointWake  chan struct{}
}

// errClosed answers statements asked for after the Store closed.
var errClosed = errors.New("storage: closed")

// stmtCache prepares each query once per pool (or per connection: SQLite's writer).
type stmtCache struct {
	db interface {
		PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	}
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func (sc *stmtCache) get(ctx context.Context, query string) (*sql.Stmt, error) {
	if sc == nil {
		return nil, nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st, ok := sc.m[query]; ok {
		return st, nil
	}
	if sc.m == nil {
		return nil, errClosed // a late reader after Close: an error, not a write to a nil map
	}
	st, err := sc.db.PrepareContext(ctx, anonymousParams(query))
	if err != nil {
		return nil, err
	}
	sc.m[query] = st
	return st, nil
}

// anonymousParams rewrites a query whose parameters are $1, $2, ... $n, each once and in that
// order, to use plain "?" parameters, which bind the same arguments. SQLite keeps the names of
// numbered parameters in a list that the driver searches once per parameter as it binds, which
// made binding quadratic: a batch insert of 8 events has 168 parameters. Any other use of the
// parameters (one used twice, out of order) keeps the query as it is.
func anonymousParams(query string) string {
	var b strings.Builder
	next := 1
	for i := 0; i < len(query); i++ {
		switch c := query[i]; c {
		case '\'', '"': // a string literal or quoted identifier: copied as it is
			j := strings.IndexByte(query[i+1:], c)
			if j < 0 {
				return query
			}
			if b.Cap() > 0 {
				b.WriteString(query[i : i+j+2])
			}
			i += j + 1
		case '$':
			j := i + 1
			for j < len(query) && query[j] >= '0' && query[j] <= '9' {
				j++
			}
			if j == i+1 || query[i+1:j] != strconv.Itoa(next) {
				return query
			}
			if b.Cap() == 0 {
				b.Grow(len(query))
				b.WriteString(query[:i])
			}
			b.WriteByte('?')
			next++
			i = j - 1
		default:
			if b.Cap() > 0 {
				b.WriteByte(c)
			}
		}
	}
	if b.Cap() == 0 {
		return query
	}
	return b.String()
}

func (sc *stmtCache) close() {
	if sc == nil {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, st := range sc.m {
		st.Close()
	}
	sc.m = nil
}

type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Conn runs the store's queries on the read pool or inside a write transaction.
type Conn struct {
	q       querier
	tx      *sql.Tx // nil on the read pool
	stmts   *stmtCache
	dialect dialect
	// moves collects the counter values the transaction sets (nil outside Write).
	moves *[]positionMove
}

// stmt returns the prepared statement for query, bound to the transaction if there is one, or
// nil when the backend caches statements itself.
func (c Conn) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	st, err := c.stmts.get(ctx, query)
	if err != nil || st == nil {
		return nil, c.dialect.mapError(err)
	}
	if c.tx != nil {
		return c.tx.StmtContext(ctx, st), nil
	}
	return st, nil
}

// Open connects to the backend and brings the schema up to date.
func Open(ctx context.Context, o Options) (*Store, error) {
	d, err := dialectFor(o.Backend)
	if err != nil {
		return nil, err
	}
	write, read, err := d.open(o)
	if err != nil {
		return nil, err
	}
	s := &Store{write: write, read: read, dialect: d}
	if d.name() == "sqlite" {
		s.writeStmts = &stmtCache{db: write, m: map[string]*sql.Stmt{}}
		s.readStmts = &stmtCache{db: read, m: map[string]*sql.Stmt{}}
	}
	if err := s.connect(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("storage: connect to %s: %w", o.Backend, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if d.name() == "sqlite" {
		s.stopCheckpoints, s.checkpointsDone, s.checkpointWake = make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
		go s.checkpointLoop()
	}
	return s, nil
}

// connect opens the first write connection. A new SQLite database is switched to WAL as the
// connection opens, which SQLite refuses with SQLITE_BUSY, without waiting, while another process
// or node does the same; connect tries again for up to 10 seconds then.
func (s *Store) connect(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.write.PingContext(ctx)
		if err == nil || s.dialect.name() != "sqlite" || !strings.Contains(err.Error(), "SQLITE_BUSY") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkpointEvery is how often, at most, checkpointLoop runs while the database is written.
const checkpointEvery = time.Second

// checkpointLoop copies the SQLite WAL into the database file after commits, at most every
// checkpointEvery, off the writer's path (a PASSIVE checkpoint never blocks writers); an idle
// database costs it nothing. The writer still checkpoints by itself when the WAL reaches
// wal_autocheckpoint pages, which lets it start the WAL over. (Every 100 ms took the writer's
// share of the copying from ~9 to ~2 µs per sent event but cost more CPU in all, since a page
// written again between two checkpoints is copied each time.)
func (s *Store) checkpointLoop() {
	defer close(s.checkpointsDone)
	for {
		select {
		case <-s.stopCheckpoints:
			return
		case <-s.checkpointWake:
		}
		_, _ = s.write.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
		select {
		case <-s.stopCheckpoints:
			return
		case <-time.After(checkpointEvery):
		}
	}
}

// Close releases the connections.
func (s *Store) Close() error {
	if s.stopCheckpoints != nil {
		close(s.stopCheckpoints)
		<-s.checkpointsDone
		s.stopCheckpoints = nil
	}
	if s.writeStmts != nil {
		s.writeMu.Lock() // a Write in progress finishes first
		defer s.writeMu.Unlock()
	}
	s.writeStmts.close()
	s.readStmts.close()
	if s.writeConn != nil {
		s.writeConn.Close()
	}
	err := s.write.Close()
	if s.read != s.write {
		err = errors.Join(err, s.read.Close())
	}
	return err
}

// Backend names the dialect in use ("sqlite" or "postgres").
func (s *Store) Backend() string { return s.dialect.name() }

// Read returns a Conn on the read pool.
func (s *Store) Read() Conn { return Conn{q: s.read, stmts: s.readStmts, dialect: s.dialect} }

// Write runs fn in one transaction and commits it if fn returns nil. fn must not call Write itself
// (on SQLite there is a single writer connection).
func (s *Store) Write(ctx context.Context, fn func(c Conn) error) error {
	if s.writeStmts != nil {
		return s.writeSQLite(ctx, fn)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storage: begin: %w", err)
	}
	var moves []positionMove
	if err := fn(Conn{q: tx, tx: tx, stmts: s.writeStmts, dialect: s.dialect, moves: &moves}); err != nil {
		_ = tx.Rollback()
		return err
	}
	err = tx.Commit()
	// Counted whatever the outcome: a commit that failed on the way back may have happened.
	s.commits.Add(1)
	if err != nil {
		s.written.unsure.Add(1)
		return fmt.Errorf("storage: commit: %w", s.dialect.mapError(err))
	}
	s.committed(moves)
	return nil
}

// writeSQLite is Write on SQLite's writer connection.
func (s *Store) writeSQLite(ctx context.Context, fn func(c Conn) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.writeConn == nil {
		if s.writeStmts.m == nil {
			return errClosed
		}
		wc, err := s.write.Conn(ctx)
		if err != nil {
			return fmt.Errorf("storage: begin: %w", err)
		}
		s.writeConn, s.writeStmts.db = wc, wc
	}
	s.sqliteMoves = s.sqliteMoves[:0]
	c := Conn{q: s.writeConn, stmts: s.writeStmts, dialect: s.dialect, moves: &s.sqliteMoves}
	// A statement interrupted by ctx rolls the transaction back by itself; the ROLLBACK below
	// then fails (no transaction is active) and is ignored. It must not be cancelled itself.
	rollback := func() { _, _ = c.exec(context.WithoutCancel(ctx), `ROLLBACK`) }
	if _, err := c.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
		// A transaction left open (a ROLLBACK that could not run) must not hold the writer forever:
		// end it and try once more. A connection that went bad is replaced on the next Write.
		rollback()
		if _, err := c.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
			if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
				s.writeConn.Close()
				s.writeConn = nil
				s.writeStmts.close()
				s.writeStmts.m = map[string]*sql.Stmt{}
			}
			return fmt.Errorf("storage: begin: %w", err)
		}
	}
	if err := fn(c); err != nil {
		rollback()
		return err
	}
	if err := ctx.Err(); err != nil { // as database/sql does: a cancelled transaction is rolled back
		rollback()
		return err
	}
	_, err := c.exec(context.WithoutCancel(ctx), `COMMIT`)
	s.commits.Add(1) // counted whatever the outcome, as in Write
	if err != nil {
		s.written.unsure.Add(1)
		rollback()
		return fmt.Errorf("storage: commit: %w", err)
	}
	s.committed(s.sqliteMoves)
	select {
	case s.checkpointWake <- struct{}{}:
	default: // already woken
	}
	return nil
}

// Commits counts the write transactions of this Store that ended in a commit (or an attempt at
// one), each counted once its commit returned: a read started after Commits returned n sees every
// change this Store committed before the count reached n. Caches of what this node writes compare
// it, as a version, with the count their answer was read at.
func (s *Store) Commits() uint64 { return s.commits.Load() }

// WriteRetry is Write, run again (up to 5 times) when the database aborted the transaction to
// break a deadlock with another one (PostgreSQL). fn must be safe to run again: no effects outside
// the transaction, and everything it returns through variables assigned afresh on each run.
func (s *Store) WriteRetry(ctx context.Context, fn func(c Conn) error) error {
	for attempt := 1; ; attempt++ {
		err := s.Write(ctx, fn)
		if err == nil || !errors.Is(err, ErrRetry) || attempt == 5 || ctx.Err() != nil {
			return err
		}
	}
}

// Ping checks the database answers (for readiness checks).
func (s *Store) Ping(ctx context.Context) error { return s.read.PingContext(ctx) }

func (c Conn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	var res sql.Result
	if st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = c.q.ExecContext(ctx, query, args...)
	}
	return res, c.dialect.mapError(err)
}

// execOne runs a statement that must change exactly one row; none is ErrNotFound.
func (c Conn) execOne(ctx context.Context, query string, args ...any) error {
	res, err := c.exec(ctx, query, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// scanOne runs a single-row query; no row is ErrNotFound.
func (c Conn) scanOne(ctx context.Context, query string, args []any, dest ...any) error {
	err := c.row(ctx, query, args...).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return c.dialect.mapError(err)
}

// row runs a single-row query through the statement cache; a preparation error surfaces from Scan.
func (c Conn) row(ctx context.Context, query string, args ...any) interface{ Scan(...any) error } {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return errRow{err}
	}
	if st == nil {
		return c.q.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }

// collect runs a query and scans every row with scan.
func collect[T any](ctx context.Context, c Conn, query string, args []any, scan func(*sql.Rows) (T, error)) ([]T, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	var rows *sql.Rows
	if st != nil {
		rows, err = st.QueryContext(ctx, args...)
	} else {
		rows, err = c.q.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, c.dialect.mapError(err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func nowMS() int64 { return time.Now().UnixMilli() }

// Savepoint marks a point inside a Write transaction that RollbackToSavepoint returns to, so one
// job of a batch can fail without aborting the others.
func (c Conn) Savepoint(ctx context.Context) error {
	_, err := c.exec(ctx, `SAVEPOINT job`)
	return err
}

// RollbackToSavepoint undoes everything since Savepoint.
func (c Conn) RollbackToSavepoint(ctx context.Context) error {
	_, err := c.exec(ctx, `ROLLBACK TO SAVEPOINT job`)
	return err
}

// ReleaseSavepoint keeps everything since Savepoint.
func (c Conn) ReleaseSavepoint(ctx context.Context) error {
	_, err := c.exec(ctx, `RELEASE SAVEPOINT job`)
	return err
}
