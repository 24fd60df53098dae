package storage

import (
	"context"
	"database/sql"
	"encoding/json"
)

// AccountData is one account data entry; RoomID is "" for global data.
type AccountData struct {
	RoomID    string
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// PutAccountData stores content under (user, room, type) at a new account_data stream position,
// which it returns.
func (c Conn) PutAccountData(ctx context.Context, localpart, roomID, dataType string, content json.RawMessage) (int64, error) {
	pos, err := c.NextPosition(ctx, StreamAccountData)
	if err != nil {
		return 0, err
	}
	_, err = c.exec(ctx, `INSERT INTO account_data (localpart, room_id, data_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (localpart, room_id, data_type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		localpart, roomID, dataType, string(content), pos)
	return pos, err
}

// GetAccountData reads one entry's content.
func (c Conn) GetAccountData(ctx context.Context, localpart, roomID, dataType string) (json.RawMessage, error) {
	var v string
	err := c.scanOne(ctx, `SELECT content FROM account_data WHERE localpart = $1 AND room_id = $2 AND data_type = $3`,
		[]any{localpart, roomID, dataType}, &v)
	return json.RawMessage(v), err
}

// AccountDataSince lists a user's entries changed after position since (0 for all), in position order.
func (c Conn) AccountDataSince(ctx context.Context, localpart string, since int64) ([]AccountData, error) {
	return collect(ctx, c, `SELECT room_id, data_type, content, stream_pos FROM account_data
		WHERE localpart = $1 AND stream_pos > $2 ORDER BY stream_pos`, []any{localpart, since},
		func(r *sql.Rows) (AccountData, error) {
			var a AccountData
			var content string
			err := r.Scan(&a.RoomID, &a.Type, &content, &a.StreamPos)
			a.Content = json.RawMessage(content)
			return a, err
		})
}

// DeleteAccountDataOf removes all of a user's account data (account deactivation with erase).
func (c Conn) DeleteAccountDataOf(ctx context.Context, localpart string) error {
	_, err := c.exec(ctx, `DELETE FROM account_data WHERE localpart = $1`, localpart)
	return err
}
