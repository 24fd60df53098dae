package storage

import (
	"context"
	"database/sql"
)

// InsertOpenIDToken stores an OpenID token hash for a user.
func (c Conn) InsertOpenIDToken(ctx context.Context, hash, localpart string, expiresTS int64) error {
	_, err := c.exec(ctx, `INSERT INTO openid_tokens (token_hash, localpart, expires_ts) VALUES ($1, $2, $3)`, hash, localpart, expiresTS)
	return err
}

// OpenIDToken returns the user and expiry of an OpenID token.
func (c Conn) OpenIDToken(ctx context.Context, hash string) (localpart string, expiresTS int64, err error) {
	err = c.scanOne(ctx, `SELECT localpart, expires_ts FROM openid_tokens WHERE token_hash = $1`, []any{hash}, &localpart, &expiresTS)
	return localpart, expiresTS, err
}

// DeleteOpenIDTokensOf revokes every OpenID token of a user (account deactivation).
func (c Conn) DeleteOpenIDTokensOf(ctx context.Context, localpart string) error {
	_, err := c.exec(ctx, `DELETE FROM openid_tokens WHERE localpart = $1`, localpart)
	return err
}

// InsertRegistrationNonce stores a shared-secret registration nonce.
func (c Conn) InsertRegistrationNonce(ctx context.Context, nonce string, expiresTS int64) error {
	_, err := c.exec(ctx, `INSERT INTO registration_nonces (nonce, expires_ts) VALUES ($1, $2)`, nonce, expiresTS)
	return err
}

// TakeRegistrationNonce deletes a nonce and reports whether it existed and had not expired at now.
// A nonce can be taken once.
func (c Conn) TakeRegistrationNonce(ctx context.Context, nonce string, now int64) (bool, error) {
	res, err := c.exec(ctx, `DELETE FROM registration_nonces WHERE nonce = $1 AND expires_ts >= $2`, nonce, now)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PurgeExpired deletes expired OpenID tokens, nonces and access tokens older than now.
func (c Conn) PurgeExpired(ctx context.Context, now int64) error {
	for _, q := range []string{
		`DELETE FROM openid_tokens WHERE expires_ts < $1`,
		`DELETE FROM registration_nonces WHERE expires_ts < $1`,
	} {
		if _, err := c.exec(ctx, q, now); err != nil {
			return err
		}
	}
	return nil
}

func scanString(r *sql.Rows) (string, error) {
	var s string
	return s, r.Scan(&s)
}
