package storage

import (
	"context"
	"database/sql"
)

// StreamReceipts is the stream of receipt changes.
const StreamReceipts = "receipts"

// Receipt is the latest receipt of one (room, user, type, thread); ThreadID "" is unthreaded.
type Receipt struct {
	RoomID    string
	UserID    string
	Type      string
	ThreadID  string
	EventID   string
	EventPos  int64
	TS        int64
	StreamPos int64
}

// PutReceipt stores a receipt at a new receipts stream position, unless the stored receipt of the
// same (room, user, type, thread) already acknowledges an event at or after r.EventPos: receipts
// only move forward. It returns the new position, or 0 when nothing changed.
func (c Conn) PutReceipt(ctx context.Context, r Receipt) (int64, error) {
	// The counter row stays locked until commit, so the check below sees every earlier receipt.
	pos, err := c.NextPosition(ctx, StreamReceipts)
	if err != nil {
		return 0, err
	}
	var cur int64
	err = c.scanOne(ctx, `SELECT event_pos FROM receipts WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4`,
		[]any{r.RoomID, r.UserID, r.Type, r.ThreadID}, &cur)
	if err == nil && cur >= r.EventPos {
		return 0, nil // the position stays unused: a gap, which readers do not mind
	}
	if err != nil && err != ErrNotFound {
		return 0, err
	}
	_, err = c.exec(ctx, `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id,
			event_pos = excluded.event_pos, ts = excluded.ts, stream_pos = excluded.stream_pos`,
		r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.EventPos, r.TS, pos)
	return pos, err
}

// ReceiptsSince lists the receipts of the given rooms changed after position since (0: all of
// them), in position order, without the private receipts of users other than viewer.
func (c Conn) ReceiptsSince(ctx context.Context, roomIDs []string, since int64, viewer string) ([]Receipt, error) {
	var out []Receipt
	for start := 0; start < len(roomIDs); start += maxRoomsPerQuery {
		chunk := roomIDs[start:min(start+maxRoomsPerQuery, len(roomIDs))]
		n := len(chunk)
		args := append(stringArgs(chunk), since, viewer)
		rs, err := collect(ctx, c, `SELECT room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos FROM receipts
			WHERE room_id IN (`+placeholders(1, n)+`) AND stream_pos > $`+itoa(n+1)+`
				AND (receipt_type <> 'm.read.private' OR user_id = $`+itoa(n+2)+`)
			ORDER BY stream_pos`, args, func(r *sql.Rows) (Receipt, error) {
			var x Receipt
			return x, r.Scan(&x.RoomID, &x.UserID, &x.Type, &x.ThreadID, &x.EventID, &x.EventPos, &x.TS, &x.StreamPos)
		})
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// UnreadCount is the number of unread messages of one room and thread ("" for the main timeline).
type UnreadCount struct {
	RoomID   string
	ThreadID string
	Count    int
}

// UnreadCounts counts, for each of the given rooms, the messages (m.room.message and
// m.room.encrypted) of other users than userID after the user's read-up-to mark: the latest of
// their m.read and m.read.private receipts that cover the message (unthreaded ones always; a
// threaded one for the message's thread, "main" for messages outside threads). One query for all
// rooms, grouped by room and thread root. Only messages at or below stream position upTo count.
func (c Conn) UnreadCounts(ctx context.Context, userID string, roomIDs []string, upTo int64) ([]UnreadCount, error) {
	var out []UnreadCount
	for start := 0; start < len(roomIDs); start += maxRoomsPerQuery {
		chunk := roomIDs[start:min(start+maxRoomsPerQuery, len(roomIDs))]
		n := len(chunk)
		u := `$` + itoa(n+1)
		args := append(stringArgs(chunk), userID, upTo)
		cs, err := collect(ctx, c, `SELECT e.room_id, CASE WHEN e.rel_type = 'm.thread' THEN e.relates_to ELSE '' END, COUNT(*)
			FROM events e
			WHERE e.room_id IN (`+placeholders(1, n)+`) AND e.stream_pos IS NOT NULL AND e.stream_pos <= $`+itoa(n+2)+`
				AND e.type IN ('m.room.message', 'm.room.encrypted') AND e.sender <> `+u+`
				AND NOT e.rejected AND NOT e.soft_failed AND e.redacted_by = ''
				AND e.stream_pos > COALESCE((SELECT MAX(r.event_pos) FROM receipts r
					WHERE r.room_id = e.room_id AND r.user_id = `+u+` AND r.receipt_type IN ('m.read', 'm.read.private')
						AND (r.thread_id = '' OR r.thread_id = CASE WHEN e.rel_type = 'm.thread' THEN e.relates_to ELSE 'main' END)), 0)
			GROUP BY e.room_id, CASE WHEN e.rel_type = 'm.thread' THEN e.relates_to ELSE '' END`, args,
			func(r *sql.Rows) (UnreadCount, error) {
				var x UnreadCount
				return x, r.Scan(&x.RoomID, &x.ThreadID, &x.Count)
			})
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

// ReadMarks lists a user's m.read and m.read.private receipts in the given rooms (what unread
// counts are measured from), by primary key.
func (c Conn) ReadMarks(ctx context.Context, userID string, roomIDs []string) ([]Receipt, error) {
	var out []Receipt
	for start := 0; start < len(roomIDs); start += maxRoomsPerQuery {
		chunk := roomIDs[start:min(start+maxRoomsPerQuery, len(roomIDs))]
		n := len(chunk)
		args := append(stringArgs(chunk), userID)
		rs, err := collect(ctx, c, `SELECT room_id, receipt_type, thread_id, event_pos FROM receipts
			WHERE room_id IN (`+placeholders(1, n)+`) AND user_id = $`+itoa(n+1)+` AND receipt_type IN ('m.read', 'm.read.private')`,
			args, func(r *sql.Rows) (Receipt, error) {
				x := Receipt{UserID: userID}
				return x, r.Scan(&x.RoomID, &x.Type, &x.ThreadID, &x.EventPos)
			})
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}
