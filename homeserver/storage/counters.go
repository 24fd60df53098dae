package storage

import (
	"context"
	"database/sql"
)

// Stream names of stream_counters.
const (
	StreamAccountData = "account_data"
)

// NextPosition allocates the next position of a stream inside the caller's transaction. The counter
// row stays locked until the transaction ends, so positions of one stream commit in order: a reader
// that has seen position N has seen every position below N.
func (c Conn) NextPosition(ctx context.Context, stream string) (int64, error) {
	var pos int64
	err := c.scanOne(ctx, `INSERT INTO stream_counters (name, pos) VALUES ($1, 1)
		ON CONFLICT (name) DO UPDATE SET pos = stream_counters.pos + 1 RETURNING pos`, []any{stream}, &pos)
	if err == nil {
		c.moved(stream, pos)
	}
	return pos, err
}

// AdvancePosition allocates the next n positions of a stream inside the caller's transaction, as
// NextPosition does one, and returns the last of them (the first is the result - n + 1).
func (c Conn) AdvancePosition(ctx context.Context, stream string, n int64) (int64, error) {
	var pos int64
	err := c.scanOne(ctx, `INSERT INTO stream_counters (name, pos) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET pos = stream_counters.pos + excluded.pos RETURNING pos`, []any{stream, n}, &pos)
	if err == nil {
		c.moved(stream, pos)
	}
	return pos, err
}

// Position is the latest allocated position of a stream (0 when none).
func (c Conn) Position(ctx context.Context, stream string) (int64, error) {
	var pos int64
	err := c.scanOne(ctx, `SELECT pos FROM stream_counters WHERE name = $1`, []any{stream}, &pos)
	if err == ErrNotFound {
		return 0, nil
	}
	return pos, err
}

// LockPosition locks a stream's counter row until the transaction ends and returns its current
// position. Together with SetPosition it lets one transaction allocate many positions with two
// statements; the lock keeps positions committing in order.
//
// A plain read on SQLite, whose write transactions hold the database's write lock from their
// start (BEGIN IMMEDIATE); SELECT ... FOR UPDATE on PostgreSQL. The first use of a stream creates
// its row with an upsert, which locks it too (and serialises two first uses).
func (c Conn) LockPosition(ctx context.Context, stream string) (int64, error) {
	var pos int64
	q := `SELECT pos FROM stream_counters WHERE name = $1`
	if c.dialect.name() == "postgres" {
		q += ` FOR UPDATE`
	}
	err := c.scanOne(ctx, q, []any{stream}, &pos)
	if err != ErrNotFound {
		return pos, err
	}
	err = c.scanOne(ctx, `INSERT INTO stream_counters (name, pos) VALUES ($1, 0)
		ON CONFLICT (name) DO UPDATE SET pos = stream_counters.pos RETURNING pos`, []any{stream}, &pos)
	return pos, err
}

// ReservePositions allocates the next n positions of a stream inside the caller's transaction
// and returns the position before the first of them (base: they are base+1 to base+n). The
// counter stays locked until the transaction ends, as with LockPosition. On PostgreSQL it is one
// statement (AdvancePosition): every statement of a transaction is a round trip to the database
// server, which a busy machine makes long. On SQLite, where a statement is a function call and
// RETURNING is the slower form, it is LockPosition and SetPosition.
func (c Conn) ReservePositions(ctx context.Context, stream string, n int64) (int64, error) {
	if n > 0 && c.dialect.name() == "postgres" {
		last, err := c.AdvancePosition(ctx, stream, n)
		return last - n, err
	}
	base, err := c.LockPosition(ctx, stream)
	if err != nil || n == 0 {
		return base, err
	}
	return base, c.SetPosition(ctx, stream, base+n)
}

// SetPosition stores the last position allocated under LockPosition.
func (c Conn) SetPosition(ctx context.Context, stream string, pos int64) error {
	err := c.execOne(ctx, `UPDATE stream_counters SET pos = $2 WHERE name = $1`, stream, pos)
	if err == nil {
		c.moved(stream, pos)
	}
	return err
}

// Positions reads the latest allocated positions of several streams with one query (0 for a
// stream with none).
func (c Conn) Positions(ctx context.Context, streams ...string) (map[string]int64, error) {
	rows, err := collect(ctx, c, `SELECT name, pos FROM stream_counters WHERE name IN (`+placeholders(1, len(streams))+`)`,
		stringArgs(streams), func(r *sql.Rows) (struct {
			name string
			pos  int64
		}, error) {
			var x struct {
				name string
				pos  int64
			}
			return x, r.Scan(&x.name, &x.pos)
		})
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(streams))
	for _, r := range rows {
		out[r.name] = r.pos
	}
	return out, nil
}
