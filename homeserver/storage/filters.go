package storage

import (
	"context"
	"encoding/json"
)

// InsertFilter stores a filter and returns its new per-user ID.
func (c Conn) InsertFilter(ctx context.Context, localpart string, filter json.RawMessage) (int64, error) {
	id, err := c.NextPosition(ctx, "filter:"+localpart)
	if err != nil {
		return 0, err
	}
	_, err = c.exec(ctx, `INSERT INTO filters (localpart, filter_id, filter) VALUES ($1, $2, $3)`, localpart, id, string(filter))
	return id, err
}

// Filter reads a stored filter.
func (c Conn) Filter(ctx context.Context, localpart string, id int64) (json.RawMessage, error) {
	var v string
	err := c.scanOne(ctx, `SELECT filter FROM filters WHERE localpart = $1 AND filter_id = $2`, []any{localpart, id}, &v)
	return json.RawMessage(v), err
}
