package storage

import (
	"context"
	"database/sql"
	"encoding/json"
)

// ProfileField reads one profile field's JSON value.
func (c Conn) ProfileField(ctx context.Context, localpart, field string) (json.RawMessage, error) {
	var v string
	err := c.scanOne(ctx, `SELECT value FROM profiles WHERE localpart = $1 AND field = $2`, []any{localpart, field}, &v)
	return json.RawMessage(v), err
}

// Profile reads every profile field of a user.
func (c Conn) Profile(ctx context.Context, localpart string) (map[string]json.RawMessage, error) {
	type kv struct{ k, v string }
	rows, err := collect(ctx, c, `SELECT field, value FROM profiles WHERE localpart = $1`, []any{localpart},
		func(r *sql.Rows) (kv, error) {
			var p kv
			return p, r.Scan(&p.k, &p.v)
		})
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(rows))
	for _, p := range rows {
		out[p.k] = json.RawMessage(p.v)
	}
	return out, nil
}

// SetProfileField sets one field to a JSON value.
func (c Conn) SetProfileField(ctx context.Context, localpart, field string, value json.RawMessage) error {
	_, err := c.exec(ctx, `INSERT INTO profiles (localpart, field, value) VALUES ($1, $2, $3)
		ON CONFLICT (localpart, field) DO UPDATE SET value = excluded.value`, localpart, field, string(value))
	return err
}

// DeleteProfileField removes one field.
func (c Conn) DeleteProfileField(ctx context.Context, localpart, field string) error {
	_, err := c.exec(ctx, `DELETE FROM profiles WHERE localpart = $1 AND field = $2`, localpart, field)
	return err
}

// DeleteProfile removes every field of a user.
func (c Conn) DeleteProfile(ctx context.Context, localpart string) error {
	_, err := c.exec(ctx, `DELETE FROM profiles WHERE localpart = $1`, localpart)
	return err
}
