package storage

import (
	"context"
	"database/sql"
)

// Queries of the room directory, aliases, space hierarchies, upgrades, forgotten rooms and
// timestamp lookups.

// PublishedRooms lists the rooms published in the room directory (visibility 'public').
func (c Conn) PublishedRooms(ctx context.Context) ([]Room, error) {
	return collect(ctx, c, `SELECT room_id, version, creator, visibility, created_ts FROM rooms WHERE visibility = 'public'
		ORDER BY created_ts, room_id`, nil, func(r *sql.Rows) (Room, error) {
		var x Room
		return x, r.Scan(&x.RoomID, &x.Version, &x.Creator, &x.Visibility, &x.CreatedTS)
	})
}

// RoomsByID reads the rooms with the given IDs that exist, in no particular order.
func (c Conn) RoomsByID(ctx context.Context, ids []string) ([]Room, error) {
	var out []Room
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		rooms, err := collect(ctx, c, `SELECT room_id, version, creator, visibility, created_ts FROM rooms
			WHERE room_id IN (`+placeholders(1, len(chunk))+`)`, stringArgs(chunk), func(r *sql.Rows) (Room, error) {
			var x Room
			return x, r.Scan(&x.RoomID, &x.Version, &x.Creator, &x.Visibility, &x.CreatedTS)
		})
		if err != nil {
			return nil, err
		}
		out = append(out, rooms...)
	}
	return out, nil
}

// CurrentStateEvents reads the current state events of the given types in the given rooms (every
// state key), in no particular order.
func (c Conn) CurrentStateEvents(ctx context.Context, roomIDs, types []string) ([]Event, error) {
	if len(roomIDs) == 0 || len(types) == 0 {
		return nil, nil
	}
	var out []Event
	for start := 0; start < len(roomIDs); start += 200 {
		chunk := roomIDs[start:min(start+200, len(roomIDs))]
		args := append(stringArgs(chunk), stringArgs(types)...)
		evs, err := collect(ctx, c, `SELECT `+prefixedEventColumns+` FROM current_state cs JOIN events e ON e.event_id = cs.event_id
			WHERE cs.room_id IN (`+placeholders(1, len(chunk))+`) AND cs.type IN (`+placeholders(len(chunk)+1, len(types))+`)`,
			args, scanEventRows)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// StateContent is one current state event's room, type, state key and client form.
type StateContent struct {
	RoomID, Type, StateKey string
	ClientJSON             []byte
}

func scanStateContent(r *sql.Rows) (StateContent, error) {
	var x StateContent
	var client string
	err := r.Scan(&x.RoomID, &x.Type, &x.StateKey, &client)
	x.ClientJSON = []byte(client)
	return x, err
}

// StateOfTypeEverywhere reads the current state events of the given types with state key "" in
// every room this server knows, in no particular order.
func (c Conn) StateOfTypeEverywhere(ctx context.Context, types []string) ([]StateContent, error) {
	if len(types) == 0 {
		return nil, nil
	}
	return collect(ctx, c, `SELECT cs.room_id, cs.type, cs.state_key, e.client_json FROM current_state cs
		JOIN events e ON e.event_id = cs.event_id
		WHERE cs.type IN (`+placeholders(1, len(types))+`) AND cs.state_key = ''`, stringArgs(types), scanStateContent)
}

// JoinedMemberEvents reads the member events of the joined members of the given rooms, in no
// particular order.
func (c Conn) JoinedMemberEvents(ctx context.Context, roomIDs []string) ([]StateContent, error) {
	var out []StateContent
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		rows, err := collect(ctx, c, `SELECT cs.room_id, cs.type, cs.state_key, e.client_json FROM current_state cs
			JOIN events e ON e.event_id = cs.event_id
			WHERE cs.room_id IN (`+placeholders(1, len(chunk))+`) AND cs.type = 'm.room.member' AND cs.membership = 'join'`,
			stringArgs(chunk), scanStateContent)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

// prefixedEventColumns is eventColumns for a query where the events table is aliased e.
const prefixedEventColumns = `e.event_id, e.room_id, e.type, e.state_key, e.sender, e.depth, e.origin_server_ts,
	COALESCE(e.stream_pos, 0), e.state_group, COALESCE(e.membership, ''), e.outlier, e.rejected, e.soft_failed, e.redacted_by,
	e.relates_to, e.rel_type, e.rel_key, e.txn_id, e.txn_device, e.pdu, e.client_json`

// JoinedMemberCounts counts the joined members of each of the rooms (rooms without any are absent).
func (c Conn) JoinedMemberCounts(ctx context.Context, roomIDs []string) (map[string]int, error) {
	out := make(map[string]int, len(roomIDs))
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		type count struct {
			room string
			n    int
		}
		rows, err := collect(ctx, c, `SELECT room_id, COUNT(*) FROM current_state
			WHERE type = 'm.room.member' AND membership = 'join' AND room_id IN (`+placeholders(1, len(chunk))+`)
			GROUP BY room_id`, stringArgs(chunk), func(r *sql.Rows) (count, error) {
			var x count
			return x, r.Scan(&x.room, &x.n)
		})
		if err != nil {
			return nil, err
		}
		for _, x := range rows {
			out[x.room] = x.n
		}
	}
	return out, nil
}

// MoveAliases points every local alias of one room at another (room upgrades).
func (c Conn) MoveAliases(ctx context.Context, fromRoom, toRoom string) error {
	_, err := c.exec(ctx, `UPDATE room_aliases SET room_id = $2 WHERE room_id = $1`, fromRoom, toRoom)
	return err
}

// ForgetRoom records that the user forgot the room at their membership event membershipEvent.
func (c Conn) ForgetRoom(ctx context.Context, userID, roomID, membershipEvent string) error {
	_, err := c.exec(ctx, `INSERT INTO forgotten_rooms (user_id, room_id, membership_event) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, room_id) DO UPDATE SET membership_event = excluded.membership_event`, userID, roomID, membershipEvent)
	return err
}

// RoomForgotten reports whether the user forgot the room and their membership has not changed since.
func (c Conn) RoomForgotten(ctx context.Context, userID, roomID string) (bool, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM forgotten_rooms f JOIN current_state cs
			ON cs.room_id = f.room_id AND cs.type = 'm.room.member' AND cs.state_key = f.user_id AND cs.event_id = f.membership_event
		WHERE f.user_id = $1 AND f.room_id = $2`, []any{userID, roomID}, &n)
	return n > 0, err
}

// RememberedRoomsOfUser is RoomsOfUser without the rooms the user forgot at their current membership.
func (c Conn) RememberedRoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]Membership, error) {
	args := []any{userID}
	for _, m := range memberships {
		args = append(args, m)
	}
	return collect(ctx, c, `SELECT cs.room_id, cs.state_key, cs.membership, cs.event_id, cs.stream_pos FROM current_state cs
		LEFT JOIN forgotten_rooms f ON f.user_id = cs.state_key AND f.room_id = cs.room_id AND f.membership_event = cs.event_id
		WHERE cs.type = 'm.room.member' AND cs.state_key = $1 AND cs.membership IN (`+placeholders(2, len(memberships))+`)
			AND f.user_id IS NULL
		ORDER BY cs.stream_pos`, args, scanMembership)
}

// EventsByTimestamp pages through a room's timeline events (not outliers, rejected or soft-failed)
// ordered by (origin_server_ts, stream_pos): forward from just after (ts, afterStream), or backward
// from just before (ts, beforeStream). Use afterStream = -1 to include events at ts itself going
// forward, and a stream position above every event to include them going backward.
func (c Conn) EventsByTimestamp(ctx context.Context, roomID string, ts, stream int64, forward bool, limit int) ([]Event, error) {
	q := `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL AND NOT rejected AND NOT soft_failed AND `
	if forward {
		q += `(origin_server_ts > $2 OR (origin_server_ts = $2 AND stream_pos > $3)) ORDER BY origin_server_ts, stream_pos LIMIT $4`
	} else {
		q += `(origin_server_ts < $2 OR (origin_server_ts = $2 AND stream_pos < $3)) ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT $4`
	}
	return collect(ctx, c, q, []any{roomID, ts, stream, limit}, scanEventRows)
}

func stringArgs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
