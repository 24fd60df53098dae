package storage

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
)

// Queries of /sync. They read by stream position range over many rooms at once, so a woken sync
// touches the database once per stream rather than once per room.

// maxRoomsPerQuery bounds the room IDs of one IN list.
const maxRoomsPerQuery = 500

// RoomEventsBetween returns up to limit timeline events (not outliers, rejected or soft-failed) of
// the given rooms with a stream position in (from, to], newest first. A result of limit events may
// leave older events of the range unread.
func (c Conn) RoomEventsBetween(ctx context.Context, roomIDs []string, from, to int64, limit int) ([]Event, error) {
	if len(roomIDs) == 0 || limit <= 0 || to <= from {
		return nil, nil
	}
	var out []Event
	for start := 0; start < len(roomIDs); start += maxRoomsPerQuery {
		chunk := roomIDs[start:min(start+maxRoomsPerQuery, len(roomIDs))]
		n := len(chunk)
		args := append(stringArgs(chunk), from, to, limit)
		evs, err := collect(ctx, c, `SELECT `+eventColumns+` FROM events
			WHERE room_id IN (`+placeholders(1, n)+`) AND stream_pos > $`+itoa(n+1)+` AND stream_pos <= $`+itoa(n+2)+`
				AND NOT rejected AND NOT soft_failed
			ORDER BY stream_pos DESC LIMIT $`+itoa(n+3), args, scanEventRows)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	if len(roomIDs) > maxRoomsPerQuery {
		// Chunks were each ordered; merge them (rare: more than maxRoomsPerQuery rooms).
		sortEventsDesc(out)
		if len(out) > limit {
			out = out[:limit]
		}
	}
	return out, nil
}

func sortEventsDesc(evs []Event) {
	slices.SortFunc(evs, func(a, b Event) int { return cmp.Compare(b.StreamPos, a.StreamPos) })
}

// StateAt reads a room's state after every timeline event at or below stream position pos (empty
// before the room's first event).
func (c Conn) StateAt(ctx context.Context, roomID string, pos int64) (StateMap, error) {
	var group int64
	err := c.scanOne(ctx, `SELECT state_group FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL AND stream_pos <= $2
		AND NOT rejected AND NOT soft_failed AND state_group <> 0 ORDER BY stream_pos DESC LIMIT 1`, []any{roomID, pos}, &group)
	if err == ErrNotFound {
		return c.stateBeforeFirst(ctx, roomID)
	}
	if err != nil {
		return nil, err
	}
	return c.StateGroup(ctx, group)
}

// stateBeforeFirst is the state before the earliest event of a room's timeline: the state after
// it without it. A room joined over federation starts its timeline with the join, and the state
// before it came with the join (send_join) without a position of its own. Events without a state
// group (an invite received before this server was in the room) do not count in either query.
func (c Conn) stateBeforeFirst(ctx context.Context, roomID string) (StateMap, error) {
	var (
		group    int64
		id, typ  string
		stateKey sql.NullString
	)
	err := c.scanOne(ctx, `SELECT state_group, event_id, type, state_key FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL
		AND NOT rejected AND NOT soft_failed AND state_group <> 0 ORDER BY stream_pos LIMIT 1`, []any{roomID}, &group, &id, &typ, &stateKey)
	if err == ErrNotFound {
		return StateMap{}, nil
	}
	if err != nil {
		return nil, err
	}
	st, err := c.StateGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	if k := (StateKey{Type: typ, StateKey: stateKey.String}); stateKey.Valid && st[k] == id {
		delete(st, k)
	}
	return st, nil
}

// MembershipChange is a membership event of the events stream.
type MembershipChange struct {
	RoomID     string
	UserID     string
	Membership string
	StreamPos  int64
}

// MembershipChangesBetween lists the membership events of every room with a stream position in
// (from, to], in stream order (the sync notifier keeps its room → members index with it).
func (c Conn) MembershipChangesBetween(ctx context.Context, from, to int64) ([]MembershipChange, error) {
	return collect(ctx, c, membershipChangesQuery, []any{from, to}, func(r *sql.Rows) (MembershipChange, error) {
		var m MembershipChange
		return m, r.Scan(&m.RoomID, &m.UserID, &m.Membership, &m.StreamPos)
	})
}

// membershipChangesQuery reads on the partial index events_member_stream (a test keeps it there).
const membershipChangesQuery = `SELECT room_id, state_key, COALESCE(membership, ''), stream_pos FROM events
	WHERE stream_pos > $1 AND stream_pos <= $2 AND type = 'm.room.member' AND NOT rejected AND NOT soft_failed
	ORDER BY stream_pos`

// MembersOfRooms lists the current members of the given rooms with one of memberships, in stream
// order of their membership events (room summaries: counts and heroes).
func (c Conn) MembersOfRooms(ctx context.Context, roomIDs []string, memberships ...string) ([]Membership, error) {
	if len(roomIDs) == 0 || len(memberships) == 0 {
		return nil, nil
	}
	var out []Membership
	for start := 0; start < len(roomIDs); start += maxRoomsPerQuery {
		chunk := roomIDs[start:min(start+maxRoomsPerQuery, len(roomIDs))]
		args := append(stringArgs(chunk), stringArgs(memberships)...)
		ms, err := collect(ctx, c, `SELECT room_id, state_key, membership, event_id, stream_pos FROM current_state
			WHERE type = 'm.room.member' AND room_id IN (`+placeholders(1, len(chunk))+`)
				AND membership IN (`+placeholders(len(chunk)+1, len(memberships))+`)
			ORDER BY stream_pos`, args, scanMembership)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	return out, nil
}
