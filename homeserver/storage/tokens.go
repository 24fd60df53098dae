package storage

import "context"

// AccessToken is the stored form of an access token (its hash, never the token).
type AccessToken struct {
	Hash        string
	Localpart   string
	DeviceID    string
	RefreshHash string // the refresh token issued with it, "" for a non-expiring token
	ExpiresTS   int64  // 0 = never
	Used        bool
	CreatedTS   int64
	// Read from the account by AccessToken.
	Admin, Guest, Deactivated bool
}

// InsertAccessToken stores a new access token.
func (c Conn) InsertAccessToken(ctx context.Context, t AccessToken) error {
	_, err := c.exec(ctx, `INSERT INTO access_tokens (token_hash, localpart, device_id, refresh_hash, expires_ts, used, created_ts)
		VALUES ($1, $2, $3, $4, $5, FALSE, $6)`, t.Hash, t.Localpart, t.DeviceID, t.RefreshHash, t.ExpiresTS, t.CreatedTS)
	return err
}

// AccessToken looks a token up by hash, with its account's flags.
func (c Conn) AccessToken(ctx context.Context, hash string) (AccessToken, error) {
	t := AccessToken{Hash: hash}
	err := c.scanOne(ctx, `SELECT t.localpart, t.device_id, t.refresh_hash, t.expires_ts, t.used, t.created_ts,
			a.is_admin, a.is_guest, a.deactivated
		FROM access_tokens t JOIN accounts a ON a.localpart = t.localpart WHERE t.token_hash = $1`,
		[]any{hash}, &t.Localpart, &t.DeviceID, &t.RefreshHash, &t.ExpiresTS, &t.Used, &t.CreatedTS,
		&t.Admin, &t.Guest, &t.Deactivated)
	return t, err
}

// MarkAccessTokenUsed records the first use of a refreshed access token and revokes the refresh token
// its pair replaced (spec: "the old refresh token remains valid until the new access token or refresh
// token is used").
func (c Conn) MarkAccessTokenUsed(ctx context.Context, t AccessToken) error {
	if _, err := c.exec(ctx, `UPDATE access_tokens SET used = TRUE WHERE token_hash = $1`, t.Hash); err != nil {
		return err
	}
	if t.RefreshHash == "" {
		return nil
	}
	return c.RevokeReplacedRefreshToken(ctx, t.RefreshHash)
}

// DeleteAccessToken removes one access token.
func (c Conn) DeleteAccessToken(ctx context.Context, hash string) error {
	_, err := c.exec(ctx, `DELETE FROM access_tokens WHERE token_hash = $1`, hash)
	return err
}

// DeleteDeviceTokensExcept removes the device's access tokens other than keepHash, and all its refresh
// tokens other than keepRefresh (used when a client logs in again with its device_id).
func (c Conn) DeleteDeviceTokensExcept(ctx context.Context, localpart, deviceID, keepHash, keepRefresh string) error {
	if _, err := c.exec(ctx, `DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2 AND token_hash <> $3`,
		localpart, deviceID, keepHash); err != nil {
		return err
	}
	_, err := c.exec(ctx, `DELETE FROM refresh_tokens WHERE localpart = $1 AND device_id = $2 AND token_hash <> $3`,
		localpart, deviceID, keepRefresh)
	return err
}

// RefreshToken is the stored form of a refresh token.
type RefreshToken struct {
	Hash      string
	Localpart string
	DeviceID  string
	PrevHash  string
	CreatedTS int64
}

// InsertRefreshToken stores a refresh token.
func (c Conn) InsertRefreshToken(ctx context.Context, t RefreshToken) error {
	_, err := c.exec(ctx, `INSERT INTO refresh_tokens (token_hash, localpart, device_id, prev_hash, created_ts)
		VALUES ($1, $2, $3, $4, $5)`, t.Hash, t.Localpart, t.DeviceID, t.PrevHash, t.CreatedTS)
	return err
}

// RefreshToken looks a refresh token up by hash.
func (c Conn) RefreshToken(ctx context.Context, hash string) (RefreshToken, error) {
	t := RefreshToken{Hash: hash}
	err := c.scanOne(ctx, `SELECT localpart, device_id, prev_hash, created_ts FROM refresh_tokens WHERE token_hash = $1`,
		[]any{hash}, &t.Localpart, &t.DeviceID, &t.PrevHash, &t.CreatedTS)
	return t, err
}

// RevokeReplacedRefreshToken deletes the refresh token that the one at hash replaced, and the access
// tokens issued with it.
func (c Conn) RevokeReplacedRefreshToken(ctx context.Context, hash string) error {
	var prev string
	if err := c.scanOne(ctx, `SELECT prev_hash FROM refresh_tokens WHERE token_hash = $1`, []any{hash}, &prev); err != nil {
		if err == ErrNotFound {
			return nil
		}
		return err
	}
	if prev == "" {
		return nil
	}
	if _, err := c.exec(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1`, prev); err != nil {
		return err
	}
	if _, err := c.exec(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1`, prev); err != nil {
		return err
	}
	_, err := c.exec(ctx, `UPDATE refresh_tokens SET prev_hash = '' WHERE token_hash = $1`, hash)
	return err
}

// DeleteRefreshToken removes a refresh token and the access tokens issued with it.
func (c Conn) DeleteRefreshToken(ctx context.Context, hash string) error {
	if _, err := c.exec(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1`, hash); err != nil {
		return err
	}
	_, err := c.exec(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1`, hash)
	return err
}
