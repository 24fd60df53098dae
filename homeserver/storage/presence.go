package storage

import (
	"context"
	"database/sql"
)

// PresenceRow is the stored presence of a user.
type PresenceRow struct {
	UserID       string
	Presence     string
	StatusMsg    string
	LastActiveTS int64
}

// PutPresence stores a user's presence.
func (c Conn) PutPresence(ctx context.Context, p PresenceRow) error {
	_, err := c.exec(ctx, `INSERT INTO presence (user_id, presence, status_msg, last_active_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg,
			last_active_ts = excluded.last_active_ts`, p.UserID, p.Presence, p.StatusMsg, p.LastActiveTS)
	return err
}

// AllPresence lists the stored presence of every user (loaded at start).
func (c Conn) AllPresence(ctx context.Context) ([]PresenceRow, error) {
	return collect(ctx, c, `SELECT user_id, presence, status_msg, last_active_ts FROM presence`, nil,
		func(r *sql.Rows) (PresenceRow, error) {
			var p PresenceRow
			return p, r.Scan(&p.UserID, &p.Presence, &p.StatusMsg, &p.LastActiveTS)
		})
}

// UsersSharingRoomWith lists the users joined to at least one room userID is joined to, userID
// included when they are joined anywhere.
func (c Conn) UsersSharingRoomWith(ctx context.Context, userID string) ([]string, error) {
	return collect(ctx, c, `SELECT DISTINCT o.state_key FROM current_state o
		WHERE o.type = 'm.room.member' AND o.membership = 'join' AND o.room_id IN (
			SELECT m.room_id FROM current_state m WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join')`,
		[]any{userID}, scanString)
}

// RemoteUsersSharingRoomWith is UsersSharingRoomWith without the users of localServer: where
// presence goes over federation. In a big room of local users it returns nothing instead of every
// member (every presence change asks it).
func (c Conn) RemoteUsersSharingRoomWith(ctx context.Context, userID, localServer string) ([]string, error) {
	return collect(ctx, c, `SELECT DISTINCT o.state_key FROM current_state o
		WHERE o.type = 'm.room.member' AND o.membership = 'join' AND o.state_key NOT LIKE $2 AND o.room_id IN (
			SELECT m.room_id FROM current_state m WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join')`,
		[]any{userID, "%:" + localServer}, scanString)
}

// ShareRoom reports whether two users are joined to a common room.
func (c Conn) ShareRoom(ctx context.Context, a, b string) (bool, error) {
	var one int
	err := c.scanOne(ctx, `SELECT 1 FROM current_state x JOIN current_state y ON x.room_id = y.room_id
		WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'
			AND y.type = 'm.room.member' AND y.state_key = $2 AND y.membership = 'join' LIMIT 1`, []any{a, b}, &one)
	if err == ErrNotFound {
		return false, nil
	}
	return err == nil, err
}

// JoinedRoomsOfUsers lists the rooms at least one of the users is joined to.
func (c Conn) JoinedRoomsOfUsers(ctx context.Context, userIDs []string) ([]string, error) {
	var out []string
	for start := 0; start < len(userIDs); start += maxRoomsPerQuery {
		chunk := userIDs[start:min(start+maxRoomsPerQuery, len(userIDs))]
		rs, err := collect(ctx, c, `SELECT DISTINCT room_id FROM current_state WHERE type = 'm.room.member'
			AND membership = 'join' AND state_key IN (`+placeholders(1, len(chunk))+`)`, stringArgs(chunk), scanString)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}
