package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// StreamEvents is the stream of room events (timeline positions).
const StreamEvents = "events"

// Event is a stored event with the columns queries select on.
type Event struct {
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	Depth          int64
	OriginServerTS int64
	StreamPos      int64 // 0 for outliers
	StateGroup     int64 // state after the event
	Membership     string
	Outlier        bool
	Rejected       bool
	SoftFailed     bool
	RedactedBy     string
	RelatesTo      string
	RelType        string
	RelKey         string
	TxnID          string
	TxnDevice      string
	PDU            []byte
	ClientJSON     []byte
	// PrevEvents are written to event_edges (the reverse lookup: which events follow one); they
	// are not read back by the event queries. Auth events are in the PDU only.
	PrevEvents []string
}

// InsertEvent stores an event with its edges. The caller allocates StreamPos (NextPosition of
// StreamEvents) inside the same transaction.
func (c Conn) InsertEvent(ctx context.Context, e Event) error {
	return c.InsertEvents(ctx, []Event{e})
}

// insertEventColumns are the columns InsertEvents writes, in the order of eventArgs.
const insertEventColumns = `event_id, room_id, type, state_key, sender, depth, origin_server_ts, stream_pos,
	state_group, membership, outlier, rejected, soft_failed, redacted_by, relates_to, rel_type, rel_key, txn_id, txn_device,
	pdu, client_json`

const insertEventColumnCount = 21

func eventArgs(args []any, e Event) []any {
	var streamPos any
	if e.StreamPos != 0 {
		streamPos = e.StreamPos
	}
	var membership any
	if e.Membership != "" {
		membership = e.Membership
	}
	return append(args, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS, streamPos,
		e.StateGroup, membership, e.Outlier, e.Rejected, e.SoftFailed, e.RedactedBy, e.RelatesTo, e.RelType, e.RelKey, e.TxnID, e.TxnDevice,
		string(e.PDU), string(e.ClientJSON))
}

// maxRowsPerInsert keeps multi-row statements under both backends' limits on bound parameters
// (SQLite 32766, PostgreSQL 65535).
const maxRowsPerInsert = 500

// eventRowsPerInsert caps InsertEvents' statements (21 parameters a row): the SQLite driver looks
// each bound parameter up in a list as long as the statement's, so a row of a 500-row statement
// cost 10-30 times one of a 16-row statement; PostgreSQL was also about twice as slow per row
// at 500 as at 8-64 (BenchmarkInsertEventsChunk, docs/performance.md).
const eventRowsPerInsert = 16

// InsertEvents stores events with their DAG edges, with one statement per table for up to
// eventRowsPerInsert events.
func (c Conn) InsertEvents(ctx context.Context, events []Event) error {
	for len(events) > 0 {
		n := min(len(events), eventRowsPerInsert)
		if err := c.insertEvents(ctx, events[:n]); err != nil {
			return err
		}
		events = events[n:]
	}
	return nil
}

func (c Conn) insertEvents(ctx context.Context, events []Event) error {
	args := make([]any, 0, insertEventColumnCount*len(events))
	for _, e := range events {
		args = eventArgs(args, e)
	}
	if _, err := c.exec(ctx, `INSERT INTO events (`+insertEventColumns+`) VALUES `+rowPlaceholders(len(events), insertEventColumnCount), args...); err != nil {
		return err
	}
	return c.insertEdges(ctx, events)
}

// insertEdges stores the prev_events edges of events.
func (c Conn) insertEdges(ctx context.Context, events []Event) error {
	args := make([]any, 0, 2*len(events))
	for _, e := range events {
		for _, p := range e.PrevEvents {
			args = append(args, p, e.EventID)
		}
	}
	if len(args) == 0 {
		return nil
	}
	_, err := c.exec(ctx, `INSERT INTO event_edges (prev_event_id, event_id) VALUES `+rowPlaceholders(len(args)/2, 2)+
		` ON CONFLICT DO NOTHING`, args...)
	return err
}

// InsertTimelineEvents is InsertEvents for events this server just created without a state key or
// a relation, the bulk of a busy room: it binds only the columns such events set (the SQLite
// driver's cost grows with the parameters bound), and stores no DAG edges. event_edges answers
// "which stored events name this one as a prev_event", asked when an event arrives after one of
// its successors (fetched missing events, backfill); an event created here names only events
// already stored, so its edges can never be part of that answer. After a failure (a repeated event
// ID) the caller must give up the transaction: on SQLite the rows before the failing one stay.
func (c Conn) InsertTimelineEvents(ctx context.Context, events []Event) error {
	for len(events) > 0 {
		n := min(len(events), maxRowsPerInsert)
		args := make([]any, 0, 12*n)
		for _, e := range events[:n] {
			if e.StateKey != nil || e.RelatesTo != "" || e.Membership != "" {
				return fmt.Errorf("storage: InsertTimelineEvents given state or a relation (%s)", e.EventID)
			}
			args = append(args, e.EventID, e.RoomID, e.Type, e.Sender, e.Depth, e.OriginServerTS, e.StreamPos, e.StateGroup,
				e.TxnID, e.TxnDevice, string(e.PDU), string(e.ClientJSON))
		}
		if _, err := c.exec(ctx, c.dialect.insertAll()+` events (event_id, room_id, type, sender, depth, origin_server_ts, stream_pos, state_group,
			txn_id, txn_device, pdu, client_json) VALUES `+rowPlaceholders(n, 12), args...); err != nil {
			return err
		}
		events = events[n:]
	}
	return nil
}

// rowPlaceholders is "($1, $2), ($3, $4)" for rows of cols parameters each.
func rowPlaceholders(rows, cols int) string {
	var b strings.Builder
	b.Grow(rows * cols * 5)
	n := 1
	for r := 0; r < rows; r++ {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i := 0; i < cols; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('$')
			b.WriteString(itoa(n))
			n++
		}
		b.WriteByte(')')
	}
	return b.String()
}

const eventColumns = `event_id, room_id, type, state_key, sender, depth, origin_server_ts, COALESCE(stream_pos, 0), state_group,
	COALESCE(membership, ''), outlier, rejected, soft_failed, redacted_by, relates_to, rel_type, rel_key, txn_id, txn_device, pdu, client_json`

func scanEvent(r interface{ Scan(...any) error }) (Event, error) {
	var e Event
	var sk sql.NullString
	var pdu, client string
	err := r.Scan(&e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Depth, &e.OriginServerTS, &e.StreamPos, &e.StateGroup,
		&e.Membership, &e.Outlier, &e.Rejected, &e.SoftFailed, &e.RedactedBy, &e.RelatesTo, &e.RelType, &e.RelKey, &e.TxnID, &e.TxnDevice,
		&pdu, &client)
	if sk.Valid {
		e.StateKey = &sk.String
	}
	e.PDU, e.ClientJSON = []byte(pdu), []byte(client)
	return e, err
}

func scanEventRows(r *sql.Rows) (Event, error) { return scanEvent(r) }

// Event reads one event.
func (c Conn) Event(ctx context.Context, eventID string) (Event, error) {
	e, err := scanEvent(c.row(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1`, eventID))
	if err == sql.ErrNoRows {
		return e, ErrNotFound
	}
	return e, err
}

// Events reads the events with the given IDs that exist, in no particular order.
func (c Conn) Events(ctx context.Context, ids []string) ([]Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out []Event
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		evs, err := collect(ctx, c, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+placeholders(1, len(chunk))+`)`, args, scanEventRows)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// placeholders returns "$from, $from+1, ..." n times.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(itoa(from + i))
	}
	return b.String()
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for n > 0 {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	return string(buf[i:])
}

// EventExists reports whether an event is stored.
func (c Conn) EventExists(ctx context.Context, eventID string) (bool, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM events WHERE event_id = $1`, []any{eventID}, &n)
	return n > 0, err
}

// ForwardExtremities lists a room's forward extremities.
func (c Conn) ForwardExtremities(ctx context.Context, roomID string) ([]string, error) {
	return collect(ctx, c, `SELECT event_id FROM forward_extremities WHERE room_id = $1 ORDER BY event_id`, []any{roomID}, scanString)
}

// ReplaceForwardExtremity replaces the forward extremity old of a room by new with one statement
// (the common case: one extremity before and after a batch of sends); ErrNotFound if old is not
// one of the room's extremities. The caller knows old is the only one.
func (c Conn) ReplaceForwardExtremity(ctx context.Context, roomID, old, new string) error {
	return c.execOne(ctx, `UPDATE forward_extremities SET event_id = $1 WHERE room_id = $2 AND event_id = $3`, new, roomID, old)
}

// SetForwardExtremities replaces a room's forward extremities.
func (c Conn) SetForwardExtremities(ctx context.Context, roomID string, ids []string) error {
	if _, err := c.exec(ctx, `DELETE FROM forward_extremities WHERE room_id = $1`, roomID); err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := c.exec(ctx, `INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)`, roomID, id); err != nil {
			return err
		}
	}
	return nil
}

// SetRedactedBy records that an event was redacted and replaces its stored forms with the
// redacted ones.
func (c Conn) SetRedactedBy(ctx context.Context, eventID, redactionID string, pdu, clientJSON []byte) error {
	return c.execOne(ctx, `UPDATE events SET redacted_by = $2, pdu = $3, client_json = $4 WHERE event_id = $1`,
		eventID, redactionID, string(pdu), string(clientJSON))
}

// TxnEvent is an event a local device sent with a transaction ID (events.txn_id, txn_device).
type TxnEvent struct {
	RoomID, EventID, Type, Sender, DeviceID, TxnID string
	OriginServerTS                                 int64
	// PDU is the event's stored form, for redactions only (the target is part of the request's
	// scope); empty for other types.
	PDU []byte
}

// RecentTxnEvents returns the events sent with a transaction ID at or after since (origin_server_ts,
// ms), rooms by the hundred: each room's read is a range of its events_room_ts index, so the cost
// follows the recent events, not the size of the table (the room writer reads them once at start).
func (c Conn) RecentTxnEvents(ctx context.Context, since int64) ([]TxnEvent, error) {
	rooms, err := collect(ctx, c, `SELECT room_id FROM rooms`, nil, func(r *sql.Rows) (string, error) {
		var id string
		return id, r.Scan(&id)
	})
	if err != nil {
		return nil, err
	}
	var out []TxnEvent
	for len(rooms) > 0 {
		n := min(len(rooms), txnRoomsPerQuery)
		evs, err := collect(ctx, c, recentTxnEventsQuery(n), append(stringArgs(rooms[:n]), since), func(r *sql.Rows) (TxnEvent, error) {
			var e TxnEvent
			var pdu string
			err := r.Scan(&e.RoomID, &e.EventID, &e.Type, &e.Sender, &e.DeviceID, &e.TxnID, &e.OriginServerTS, &pdu)
			if pdu != "" {
				e.PDU = []byte(pdu)
			}
			return e, err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		rooms = rooms[n:]
	}
	return out, nil
}

// txnRoomsPerQuery is how many rooms one query of RecentTxnEvents reads.
const txnRoomsPerQuery = 100

// recentTxnEventsQuery reads n rooms' events sent with a transaction ID since a time (a test keeps
// its plan on events_room_ts).
func recentTxnEventsQuery(n int) string {
	return `SELECT room_id, event_id, type, sender, txn_device, txn_id, origin_server_ts,
	CASE WHEN type = 'm.room.redaction' THEN pdu ELSE '' END
	FROM events WHERE room_id IN (` + placeholders(1, n) + `) AND origin_server_ts >= $` + itoa(n+1) + ` AND txn_id <> ''`
}
