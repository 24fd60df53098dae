package storage

import (
	"context"
	"database/sql"
)

// StateKey identifies a state entry.
type StateKey struct {
	Type     string
	StateKey string
}

// StateMap maps state keys to event IDs.
type StateMap map[StateKey]string

// maxStateChain is how many deltas a state group may sit on before a full snapshot is written.
const maxStateChain = 64

// CreateStateGroup stores a new state group as a delta over prev (0 for none). delta maps keys to
// event IDs; "" removes a key. When the chain would grow past maxStateChain, full (the complete
// state, which the caller has at hand) is written as a snapshot instead.
func (c Conn) CreateStateGroup(ctx context.Context, roomID string, prev int64, delta, full StateMap) (int64, error) {
	id, err := c.NextPosition(ctx, "state_group")
	if err != nil {
		return 0, err
	}
	var chain int64
	if prev != 0 {
		if err := c.scanOne(ctx, `SELECT chain_len FROM state_groups WHERE group_id = $1`, []any{prev}, &chain); err != nil {
			return 0, err
		}
		chain++
	}
	entries := delta
	if prev == 0 || chain > maxStateChain {
		prev, chain, entries = 0, 0, full
	}
	if _, err := c.exec(ctx, `INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES ($1, $2, $3, $4)`,
		id, roomID, prev, chain); err != nil {
		return 0, err
	}
	args := make([]any, 0, 4*min(len(entries), stateRowsPerInsert))
	for k, ev := range entries {
		if prev == 0 && ev == "" {
			continue
		}
		args = append(args, id, k.Type, k.StateKey, ev)
		if len(args) == 4*stateRowsPerInsert {
			if err := c.insertStateEntries(ctx, args); err != nil {
				return 0, err
			}
			args = args[:0]
		}
	}
	if err := c.insertStateEntries(ctx, args); err != nil {
		return 0, err
	}
	return id, nil
}

// stateRowsPerInsert is how many state rows (group entries, current state) one statement
// writes: a room's first state group or the current state of a room just joined is thousands of
// rows, one round trip each on PostgreSQL when written one by one, while the SQLite driver's
// cost per bound parameter grows with the statement's parameters (see docs/performance.md).
const stateRowsPerInsert = 64

// insertStateEntries writes state_group_entries rows, args holding 4 values per row.
func (c Conn) insertStateEntries(ctx context.Context, args []any) error {
	if len(args) == 0 {
		return nil
	}
	_, err := c.exec(ctx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES `+rowPlaceholders(len(args)/4, 4), args...)
	return err
}

// StateGroup reads the full state of a group: one query for the chain of groups, one for their
// entries, applied oldest first.
func (c Conn) StateGroup(ctx context.Context, group int64) (StateMap, error) {
	out := StateMap{}
	if group == 0 {
		return out, nil
	}
	type entry struct {
		chain int64
		key   StateKey
		ev    string
	}
	rows, err := collect(ctx, c, `WITH RECURSIVE chain(group_id, prev_group, chain_len) AS (
			SELECT group_id, prev_group, chain_len FROM state_groups WHERE group_id = $1
			UNION ALL
			SELECT g.group_id, g.prev_group, g.chain_len FROM state_groups g JOIN chain ON g.group_id = chain.prev_group
		)
		SELECT chain.chain_len, e.type, e.state_key, e.event_id
		FROM chain JOIN state_group_entries e ON e.group_id = chain.group_id
		ORDER BY chain.chain_len`, []any{group},
		func(r *sql.Rows) (entry, error) {
			var e entry
			return e, r.Scan(&e.chain, &e.key.Type, &e.key.StateKey, &e.ev)
		})
	if err != nil {
		return nil, err
	}
	for _, e := range rows {
		if e.ev == "" {
			delete(out, e.key)
		} else {
			out[e.key] = e.ev
		}
	}
	return out, nil
}

// SetCurrentState writes entries of a room's current state ("" event ID removes one).
func (c Conn) SetCurrentState(ctx context.Context, roomID string, key StateKey, eventID, membership string, pos int64) error {
	if eventID == "" {
		_, err := c.exec(ctx, `DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`, roomID, key.Type, key.StateKey)
		return err
	}
	var m any
	if membership != "" {
		m = membership
	}
	_, err := c.exec(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership,
			stream_pos = excluded.stream_pos`, roomID, key.Type, key.StateKey, eventID, m, pos)
	return err
}

// CurrentStateRow is one entry of a room's current state for SetCurrentStates: EventID "" removes
// the entry; Membership is the membership of m.room.member events ("" for others).
type CurrentStateRow struct {
	Key        StateKey
	EventID    string
	Membership string
}

// SetCurrentStates writes entries of a room's current state at stream position pos, as
// SetCurrentState does one by one, with one statement per stateRowsPerInsert rows. Each key may
// appear once.
func (c Conn) SetCurrentStates(ctx context.Context, roomID string, rows []CurrentStateRow, pos int64) error {
	args := make([]any, 0, 6*min(len(rows), stateRowsPerInsert))
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		_, err := c.exec(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos) VALUES `+
			rowPlaceholders(len(args)/6, 6)+` ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id,
			membership = excluded.membership, stream_pos = excluded.stream_pos`, args...)
		args = args[:0]
		return err
	}
	for _, r := range rows {
		if r.EventID == "" {
			// Removals are rare (a state resolution dropping a key): one statement each.
			if err := c.SetCurrentState(ctx, roomID, r.Key, "", "", pos); err != nil {
				return err
			}
			continue
		}
		var m any
		if r.Membership != "" {
			m = r.Membership
		}
		args = append(args, roomID, r.Key.Type, r.Key.StateKey, r.EventID, m, pos)
		if len(args) == 6*stateRowsPerInsert {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// CurrentState reads a room's current state as a map.
func (c Conn) CurrentState(ctx context.Context, roomID string) (StateMap, error) {
	type kv struct {
		k  StateKey
		ev string
	}
	rows, err := collect(ctx, c, `SELECT type, state_key, event_id FROM current_state WHERE room_id = $1`, []any{roomID},
		func(r *sql.Rows) (kv, error) {
			var x kv
			return x, r.Scan(&x.k.Type, &x.k.StateKey, &x.ev)
		})
	if err != nil {
		return nil, err
	}
	out := make(StateMap, len(rows))
	for _, x := range rows {
		out[x.k] = x.ev
	}
	return out, nil
}

// CurrentStateEvent returns the event ID of one current state entry.
func (c Conn) CurrentStateEvent(ctx context.Context, roomID, typ, stateKey string) (string, error) {
	var id string
	err := c.scanOne(ctx, `SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`,
		[]any{roomID, typ, stateKey}, &id)
	return id, err
}

// Membership is a user's current membership in a room.
type Membership struct {
	RoomID     string
	UserID     string
	Membership string
	EventID    string
	StreamPos  int64
}

// RoomsOfUser lists the rooms where the user's current membership is one of memberships.
func (c Conn) RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]Membership, error) {
	args := []any{userID}
	for _, m := range memberships {
		args = append(args, m)
	}
	return collect(ctx, c, `SELECT room_id, state_key, membership, event_id, stream_pos FROM current_state
		WHERE type = 'm.room.member' AND state_key = $1 AND membership IN (`+placeholders(2, len(memberships))+`)
		ORDER BY stream_pos`, args, scanMembership)
}

// RoomMembers lists the members of a room with one of memberships (all when none given).
func (c Conn) RoomMembers(ctx context.Context, roomID string, memberships ...string) ([]Membership, error) {
	q := `SELECT room_id, state_key, membership, event_id, stream_pos FROM current_state
		WHERE room_id = $1 AND type = 'm.room.member'`
	args := []any{roomID}
	if len(memberships) > 0 {
		q += ` AND membership IN (` + placeholders(2, len(memberships)) + `)`
		for _, m := range memberships {
			args = append(args, m)
		}
	}
	return collect(ctx, c, q+` ORDER BY state_key`, args, scanMembership)
}

func scanMembership(r *sql.Rows) (Membership, error) {
	var m Membership
	return m, r.Scan(&m.RoomID, &m.UserID, &m.Membership, &m.EventID, &m.StreamPos)
}

// CountStateEntries counts stored state group rows (for tests and metrics).
func (c Conn) CountStateEntries(ctx context.Context) (int, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM state_group_entries`, nil, &n)
	return n, err
}
