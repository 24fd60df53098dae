package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is everything that differs between the two backends. Queries are written once, with $N
// placeholders, ON CONFLICT and RETURNING, which both accept.
type dialect interface {
	name() string
	open(o Options) (write, read *sql.DB, err error)
	// ddl adapts a migration written for PostgreSQL types to this backend.
	ddl(sql string) string
	// mapError turns a unique-constraint violation into ErrConflict.
	mapError(err error) error
	// lockMigrations keeps other nodes from migrating the same database at the same time.
	lockMigrations(ctx context.Context, db *sql.DB) (unlock func(), err error)
	// insertAll begins a multi-row INSERT after whose failure the caller must give up the
	// transaction, as after any failed statement on PostgreSQL. On SQLite that is INSERT OR
	// FAIL, which may leave the rows before the failing one in place and so spares the insert
	// the statement journal (a copy of each page it touches, kept so that the statement alone
	// could be undone).
	insertAll() string
}

func dialectFor(backend string) (dialect, error) {
	switch backend {
	case "sqlite":
		return sqliteDialect{}, nil
	case "postgres":
		return postgresDialect{}, nil
	}
	return nil, fmt.Errorf("storage: unknown backend %q", backend)
}

type sqliteDialect struct{}

func (sqliteDialect) name() string { return "sqlite" }

func (sqliteDialect) open(o Options) (*sql.DB, *sql.DB, error) {
	if o.SQLitePath == "" {
		return nil, nil, errors.New("storage: sqlite path is empty")
	}
	base := "file:" + (&url.URL{Path: o.SQLitePath}).EscapedPath() +
		// busy_timeout first: switching a new database to WAL needs a lock another node may hold.
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)" +
		// Savepoints (one per job of a batch) keep their sub-journal in memory, not in a temp file.
		"&_pragma=temp_store(MEMORY)" +
		// Checkpoints run in the background (Store.checkpointLoop); this only caps the WAL should
		// they fall behind.
		"&_pragma=wal_autocheckpoint(16384)"
	// The writer's page cache is small on purpose: at the end of every write transaction SQLite
	// walks the whole hash table of the connection's cache (pcache1Truncate), so a 64 MiB cache
	// made the send path's writer spend ~14 µs of CPU per event in that walk, against ~2 µs
	// with 4 MiB (docs/performance.md, "Fifth session"). The B-trees' inner pages, which every insert descends, fit in 4 MiB; a
	// batch with more dirty pages than that spills some to the WAL before its commit, which is
	// correct and only slower.
	write, err := sql.Open("sqlite", base+"&_pragma=cache_size(-4096)&_txlock=immediate")
	if err != nil {
		return nil, nil, err
	}
	// Write transactions run one at a time (Store.writeMu; SQLite allows one writer anyway) on one
	// connection of this pool (Store.writeConn); the second serves migrations and checkpoints.
	write.SetMaxOpenConns(2)
	write.SetMaxIdleConns(2)
	// Readers keep a 64 MiB cache each (the default is 2 MiB).
	read, err := sql.Open("sqlite", base+"&_pragma=cache_size(-65536)&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, nil, err
	}
	read.SetMaxOpenConns(max(o.MaxOpenConns, 2))
	read.SetMaxIdleConns(max(o.MaxOpenConns, 2))
	return write, read, nil
}

// lockMigrations needs nothing on SQLite: the single writer connection already serialises them.
func (sqliteDialect) lockMigrations(context.Context, *sql.DB) (func(), error) { return func() {}, nil }

// ddl adapts a migration to SQLite: BYTEA is BLOB, and lines starting with "--sqlite: " are
// statements for SQLite only (comments to PostgreSQL).
func (sqliteDialect) ddl(s string) string {
	s = strings.NewReplacer("BYTEA", "BLOB").Replace(s)
	lines := strings.Split(s, "\n")
	for i, line := range lines {
		lines[i] = strings.TrimPrefix(line, "--sqlite: ")
	}
	return strings.Join(lines, "\n")
}

func (sqliteDialect) insertAll() string { return "INSERT OR FAIL INTO" }

func (sqliteDialect) mapError(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %v", ErrConflict, err)
		}
	}
	return err
}

type postgresDialect struct{}

func (postgresDialect) name() string { return "postgres" }

func (postgresDialect) open(o Options) (*sql.DB, *sql.DB, error) {
	if o.PostgresDSN == "" {
		return nil, nil, errors.New("storage: postgres DSN is empty")
	}
	db, err := sql.Open("pgx", o.PostgresDSN)
	if err != nil {
		return nil, nil, err
	}
	db.SetMaxOpenConns(max(o.MaxOpenConns, 2))
	db.SetMaxIdleConns(max(o.MaxOpenConns, 2))
	return db, db, nil
}

func (postgresDialect) ddl(s string) string { return s }

func (postgresDialect) insertAll() string { return "INSERT INTO" }

// migrationLockKey is the advisory lock nodes take while migrating ("hsmigrat" in ASCII).
const migrationLockKey = 0x68736d6967726174

// lockMigrations takes a session advisory lock on one dedicated connection until unlock.
func (postgresDialect) lockMigrations(ctx context.Context, db *sql.DB) (func(), error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLockKey)); err != nil {
		conn.Close()
		return nil, err
	}
	return func() {
		_, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(migrationLockKey))
		conn.Close()
	}, nil
}

func (postgresDialect) mapError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	if errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") { // deadlock, serialization failure
		return fmt.Errorf("%w: %v", ErrRetry, err)
	}
	return err
}
