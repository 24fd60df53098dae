package storage

import (
	"context"
	"database/sql"
)

// Room is a room this server participates in.
type Room struct {
	RoomID     string
	Version    string
	Creator    string
	Visibility string
	CreatedTS  int64
}

// InsertRoom records a room.
func (c Conn) InsertRoom(ctx context.Context, r Room) error {
	if r.Visibility == "" {
		r.Visibility = "private"
	}
	_, err := c.exec(ctx, `INSERT INTO rooms (room_id, version, creator, visibility, created_ts) VALUES ($1, $2, $3, $4, $5)`,
		r.RoomID, r.Version, r.Creator, r.Visibility, r.CreatedTS)
	return err
}

// Room reads a room.
func (c Conn) Room(ctx context.Context, roomID string) (Room, error) {
	r := Room{RoomID: roomID}
	err := c.scanOne(ctx, `SELECT version, creator, visibility, created_ts FROM rooms WHERE room_id = $1`, []any{roomID},
		&r.Version, &r.Creator, &r.Visibility, &r.CreatedTS)
	return r, err
}

// SetRoomVisibility sets the room's visibility in the public room directory.
func (c Conn) SetRoomVisibility(ctx context.Context, roomID, visibility string) error {
	return c.execOne(ctx, `UPDATE rooms SET visibility = $2 WHERE room_id = $1`, roomID, visibility)
}

// PublicRooms lists the rooms published in the directory.
func (c Conn) PublicRooms(ctx context.Context) ([]string, error) {
	return collect(ctx, c, `SELECT room_id FROM rooms WHERE visibility = 'public' ORDER BY created_ts`, nil, scanString)
}

// InsertAlias maps an alias to a room; ErrConflict if the alias exists.
func (c Conn) InsertAlias(ctx context.Context, alias, roomID, creator string, ts int64) error {
	_, err := c.exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)`, alias, roomID, creator, ts)
	return err
}

// Alias resolves an alias to (room, creator).
func (c Conn) Alias(ctx context.Context, alias string) (roomID, creator string, err error) {
	err = c.scanOne(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, []any{alias}, &roomID, &creator)
	return roomID, creator, err
}

// DeleteAlias removes an alias.
func (c Conn) DeleteAlias(ctx context.Context, alias string) error {
	return c.execOne(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
}

// AliasesOfRoom lists the local aliases of a room.
func (c Conn) AliasesOfRoom(ctx context.Context, roomID string) ([]string, error) {
	return collect(ctx, c, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, []any{roomID},
		func(r *sql.Rows) (string, error) { return scanString(r) })
}
