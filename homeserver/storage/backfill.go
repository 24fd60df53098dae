package storage

import (
	"context"
	"database/sql"
)

// Backfill: the stream positions of events placed before a room's known history, and the
// places where that history stops (backfill_extremities, migration 0014).

// StreamBackfill counts the stream positions handed to backfilled events: they are negative and
// go down (-1, -2, ...), so that every backfilled event sorts before the events this server
// received live, /sync (which reads positions above its token, never below 0) never sees them,
// and a later backfill (older events) sorts before an earlier one.
const StreamBackfill = "events_backfill"

// BackfillPositions allocates n stream positions below every position handed out so far, inside
// the caller's transaction, and returns the lowest: the positions are lowest, lowest+1, ...,
// lowest+n-1 (all negative). The oldest event of a batch takes the lowest.
func (c Conn) BackfillPositions(ctx context.Context, n int) (int64, error) {
	used, err := c.LockPosition(ctx, StreamBackfill)
	if err != nil {
		return 0, err
	}
	if err := c.SetPosition(ctx, StreamBackfill, used+int64(n)); err != nil {
		return 0, err
	}
	return -(used + int64(n)), nil
}

// BackfillExtremity is an event stored timeline events cite as a prev_event but that is not in the
// timeline here.
type BackfillExtremity struct {
	EventID string
	// Depth is the depth of the deepest stored event citing it.
	Depth int64
	// NextTry is when it may be asked for again (milliseconds; 0: now).
	NextTry int64
}

// BackfillExtremities lists a room's backfill extremities, deepest first.
func (c Conn) BackfillExtremities(ctx context.Context, roomID string) ([]BackfillExtremity, error) {
	return collect(ctx, c, `SELECT event_id, depth, next_try_ts FROM backfill_extremities WHERE room_id = $1
		ORDER BY depth DESC, event_id`, []any{roomID}, func(r *sql.Rows) (BackfillExtremity, error) {
		var e BackfillExtremity
		return e, r.Scan(&e.EventID, &e.Depth, &e.NextTry)
	})
}

// AddBackfillExtremities records backfill extremities of a room; those already recorded keep
// their row (and their NextTry).
func (c Conn) AddBackfillExtremities(ctx context.Context, roomID string, exts []BackfillExtremity) error {
	return insertRows(ctx, c, `INSERT INTO backfill_extremities (room_id, event_id, depth, next_try_ts) VALUES `,
		` ON CONFLICT (room_id, event_id) DO NOTHING`, 4, exts, func(args []any, e BackfillExtremity) []any {
			return append(args, roomID, e.EventID, e.Depth, e.NextTry)
		})
}

// DeleteBackfillExtremities forgets backfill extremities of a room (the events are stored now).
func (c Conn) DeleteBackfillExtremities(ctx context.Context, roomID string, ids []string) error {
	for len(ids) > 0 {
		n := min(len(ids), maxRowsPerInsert)
		if _, err := c.exec(ctx, `DELETE FROM backfill_extremities WHERE room_id = $1 AND event_id IN (`+placeholders(2, n)+`)`,
			append([]any{roomID}, stringArgs(ids[:n])...)...); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

// DeferBackfillExtremities sets when backfill extremities of a room may be asked for again.
func (c Conn) DeferBackfillExtremities(ctx context.Context, roomID string, ids []string, nextTry int64) error {
	for len(ids) > 0 {
		n := min(len(ids), maxRowsPerInsert)
		if _, err := c.exec(ctx, `UPDATE backfill_extremities SET next_try_ts = $2 WHERE room_id = $1 AND event_id IN (`+placeholders(3, n)+`)`,
			append([]any{roomID, nextTry}, stringArgs(ids[:n])...)...); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}
