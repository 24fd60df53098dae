package storage

import (
	"context"
	"database/sql"
	"math"
	"strings"
)

// TopoPos is a position in a room's topological order: events are ordered by (depth, stream_pos).
// A TopoPos names the boundary just after the event with that key; MaxTopo is after every event.
type TopoPos struct {
	Depth  int64
	Stream int64
}

// MaxTopo is the boundary after every event; MinTopo the one before every event.
var (
	MaxTopo = TopoPos{math.MaxInt64, math.MaxInt64}
	MinTopo = TopoPos{-1, 0}
)

// Before is the boundary just before the event at p.
func (p TopoPos) Before() TopoPos { return TopoPos{p.Depth, p.Stream - 1} }

// TimelineEvents returns up to limit timeline events (not outliers, not rejected) of a room after
// the boundary from (forward: ascending) or at or before it (backward: descending).
func (c Conn) TimelineEvents(ctx context.Context, roomID string, from TopoPos, backward bool, limit int) ([]Event, error) {
	q := `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL AND NOT rejected AND NOT soft_failed AND `
	if backward {
		q += `(depth < $2 OR (depth = $2 AND stream_pos <= $3)) ORDER BY depth DESC, stream_pos DESC LIMIT $4`
	} else {
		q += `(depth > $2 OR (depth = $2 AND stream_pos > $3)) ORDER BY depth, stream_pos LIMIT $4`
	}
	return collect(ctx, c, q, []any{roomID, from.Depth, from.Stream, limit}, scanEventRows)
}

// TopoOfStream converts a stream position into the boundary after the last timeline event of the
// room at or below it (MinTopo when there is none).
func (c Conn) TopoOfStream(ctx context.Context, roomID string, pos int64) (TopoPos, error) {
	var p TopoPos
	err := c.scanOne(ctx, `SELECT depth, stream_pos FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL AND stream_pos <= $2
		ORDER BY stream_pos DESC LIMIT 1`, []any{roomID, pos}, &p.Depth, &p.Stream)
	if err == ErrNotFound {
		return MinTopo, nil
	}
	return p, err
}

// PosValue is a (stream position, value) pair of a state history.
type PosValue struct {
	Pos   int64
	Value string
}

// MembershipHistory lists a user's membership events in a room in stream order.
func (c Conn) MembershipHistory(ctx context.Context, roomID, userID string) ([]PosValue, error) {
	return collect(ctx, c, `SELECT stream_pos, COALESCE(membership, '') FROM events
		WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2 AND stream_pos IS NOT NULL AND NOT rejected
		ORDER BY stream_pos`, []any{roomID, userID}, scanPosValue)
}

// StateHistory lists the client JSON of a state key's events in a room in stream order.
func (c Conn) StateHistory(ctx context.Context, roomID, typ, stateKey string) ([]PosValue, error) {
	return collect(ctx, c, `SELECT stream_pos, client_json FROM events
		WHERE room_id = $1 AND type = $2 AND state_key = $3 AND stream_pos IS NOT NULL AND NOT rejected
		ORDER BY stream_pos`, []any{roomID, typ, stateKey}, scanPosValue)
}

func scanPosValue(r *sql.Rows) (PosValue, error) {
	var p PosValue
	return p, r.Scan(&p.Pos, &p.Value)
}

// RelatedEvents lists timeline events relating to any of ids with one of relTypes.
func (c Conn) RelatedEvents(ctx context.Context, ids []string, relTypes ...string) ([]Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(ids)+len(relTypes))
	for _, id := range ids {
		args = append(args, id)
	}
	for _, t := range relTypes {
		args = append(args, t)
	}
	// "relates_to <> ''" lets SQLite use the partial index events_relates; without it the planner
	// cannot prove the bound IDs are non-empty and scans the table.
	return collect(ctx, c, `SELECT `+eventColumns+` FROM events WHERE relates_to <> '' AND relates_to IN (`+placeholders(1, len(ids))+`)
		AND rel_type IN (`+placeholders(len(ids)+1, len(relTypes))+`) AND stream_pos IS NOT NULL AND NOT rejected
		ORDER BY depth, stream_pos`, args, scanEventRows)
}

// Relations pages through the events relating to one event, optionally of one rel_type and event
// type, by stream position (backward: newest first).
func (c Conn) Relations(ctx context.Context, roomID, eventID, relType, eventType string, from int64, backward bool, limit int) ([]Event, error) {
	q := `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND relates_to <> '' AND relates_to = $2 AND stream_pos IS NOT NULL AND NOT rejected
		AND ($3 = '' OR rel_type = $3) AND ($4 = '' OR type = $4) AND `
	if backward {
		q += `stream_pos < $5 ORDER BY stream_pos DESC LIMIT $6`
	} else {
		q += `stream_pos > $5 ORDER BY stream_pos LIMIT $6`
	}
	return collect(ctx, c, q, []any{roomID, eventID, relType, eventType, from, limit}, scanEventRows)
}

// ThreadRoot is a thread root with the stream position of its latest reply.
type ThreadRoot struct {
	EventID   string
	LatestPos int64
}

// ThreadRoots lists a room's thread roots by latest reply, newest first, with a latest reply below
// before (0 for no bound). With participant set, only threads the user started or replied to.
func (c Conn) ThreadRoots(ctx context.Context, roomID, participant string, before int64, limit int) ([]ThreadRoot, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	return collect(ctx, c, `SELECT t.relates_to, MAX(t.stream_pos) AS latest FROM events t
		JOIN events root ON root.event_id = t.relates_to AND root.room_id = t.room_id
		WHERE t.relates_to <> '' AND t.room_id = $1 AND t.rel_type = 'm.thread' AND t.stream_pos IS NOT NULL AND NOT t.rejected
		GROUP BY t.relates_to, root.sender
		HAVING MAX(t.stream_pos) < $2 AND ($3 = '' OR root.sender = $3 OR SUM(CASE WHEN t.sender = $3 THEN 1 ELSE 0 END) > 0)
		ORDER BY latest DESC LIMIT $4`, []any{roomID, before, participant, limit},
		func(r *sql.Rows) (ThreadRoot, error) {
			var t ThreadRoot
			return t, r.Scan(&t.EventID, &t.LatestPos)
		})
}

// HasAnnotation reports whether sender already annotated target with key (and event type), not
// counting redacted annotations.
func (c Conn) HasAnnotation(ctx context.Context, roomID, target, sender, typ, key string) (bool, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM events WHERE relates_to <> '' AND room_id = $1 AND relates_to = $2 AND rel_type = 'm.annotation'
		AND sender = $3 AND type = $4 AND rel_key = $5 AND redacted_by = ''`, []any{roomID, target, sender, typ, key}, &n)
	return n > 0, err
}

// ExplainRelationQueries returns SQLite's query plans of the relation lookups (for a test that
// keeps them on the index).
func (s *Store) ExplainRelationQueries(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for name, q := range map[string]string{
		"RelatedEvents": `EXPLAIN QUERY PLAN SELECT event_id FROM events WHERE relates_to <> '' AND relates_to IN ($1, $2)
			AND rel_type IN ($3, $4) AND stream_pos IS NOT NULL AND NOT rejected`,
		"HasAnnotation": `EXPLAIN QUERY PLAN SELECT COUNT(*) FROM events WHERE relates_to <> '' AND room_id = $1 AND relates_to = $2
			AND rel_type = 'm.annotation' AND sender = $3 AND type = $4 AND rel_key = $5 AND redacted_by = ''`,
	} {
		rows, err := s.read.QueryContext(ctx, q, "a", "b", "c", "d", "e")
		if err != nil {
			return nil, err
		}
		var plan strings.Builder
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				rows.Close()
				return nil, err
			}
			plan.WriteString(detail + "\n")
		}
		rows.Close()
		out[name] = plan.String()
	}
	return out, nil
}
