package storage

import (
	"context"
	"database/sql"
)

// RegistrationToken is an admin-issued token for m.login.registration_token.
type RegistrationToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTS    *int64 `json:"expiry_time"`
	CreatedTS   int64  `json:"-"`
}

// Valid reports whether the token can still be used at time now.
func (t RegistrationToken) Valid(now int64) bool {
	if t.ExpiryTS != nil && *t.ExpiryTS <= now {
		return false
	}
	return t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed
}

const regTokenColumns = `token, uses_allowed, pending, completed, expiry_ts, created_ts`

func scanRegToken(r interface{ Scan(...any) error }) (RegistrationToken, error) {
	var t RegistrationToken
	var uses, expiry sql.NullInt64
	err := r.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &expiry, &t.CreatedTS)
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if expiry.Valid {
		t.ExpiryTS = &expiry.Int64
	}
	return t, err
}

// CreateRegistrationToken inserts a token; ErrConflict if it exists.
func (c Conn) CreateRegistrationToken(ctx context.Context, t RegistrationToken) error {
	_, err := c.exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_ts, created_ts)
		VALUES ($1, $2, 0, 0, $3, $4)`, t.Token, t.UsesAllowed, t.ExpiryTS, t.CreatedTS)
	return err
}

// RegistrationToken reads one token.
func (c Conn) RegistrationToken(ctx context.Context, token string) (RegistrationToken, error) {
	t, err := scanRegToken(c.row(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
	if err == sql.ErrNoRows {
		return t, ErrNotFound
	}
	return t, err
}

// RegistrationTokens lists every token, oldest first.
func (c Conn) RegistrationTokens(ctx context.Context) ([]RegistrationToken, error) {
	return collect(ctx, c, `SELECT `+regTokenColumns+` FROM registration_tokens ORDER BY created_ts, token`, nil,
		func(r *sql.Rows) (RegistrationToken, error) { return scanRegToken(r) })
}

// UpdateRegistrationToken sets uses_allowed and expiry_ts.
func (c Conn) UpdateRegistrationToken(ctx context.Context, token string, usesAllowed, expiryTS *int64) error {
	return c.execOne(ctx, `UPDATE registration_tokens SET uses_allowed = $2, expiry_ts = $3 WHERE token = $1`, token, usesAllowed, expiryTS)
}

// DeleteRegistrationToken removes a token.
func (c Conn) DeleteRegistrationToken(ctx context.Context, token string) error {
	return c.execOne(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
}

// AddRegistrationTokenUse moves counts of a token: pending by dPending, completed by dCompleted.
func (c Conn) AddRegistrationTokenUse(ctx context.Context, token string, dPending, dCompleted int64) error {
	return c.execOne(ctx, `UPDATE registration_tokens SET pending = pending + $2, completed = completed + $3 WHERE token = $1`,
		token, dPending, dCompleted)
}
