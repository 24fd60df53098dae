package storage

import (
	"context"
	"database/sql"
)

// BackupVersion is one server-side key backup version of a user.
type BackupVersion struct {
	Localpart string
	Version   int64
	Algorithm string
	AuthData  string // JSON object
	ETag      int64
	KeyCount  int64
	Deleted   bool
}

// BackupKey is one backed-up session key.
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       string // JSON object
}

const backupVersionColumns = `localpart, version, algorithm, auth_data, etag, key_count, deleted`

func scanBackupVersion(r interface{ Scan(...any) error }) (BackupVersion, error) {
	var v BackupVersion
	err := r.Scan(&v.Localpart, &v.Version, &v.Algorithm, &v.AuthData, &v.ETag, &v.KeyCount, &v.Deleted)
	if err == sql.ErrNoRows {
		return v, ErrNotFound
	}
	return v, err
}

// CreateBackupVersion stores a new version numbered one above every version the user ever had
// (deleted ones included) and returns its number.
func (c Conn) CreateBackupVersion(ctx context.Context, localpart, algorithm, authData string) (int64, error) {
	var v int64
	err := c.scanOne(ctx, `INSERT INTO key_backup_versions (localpart, version, algorithm, auth_data)
		SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 FROM key_backup_versions WHERE localpart = $1
		RETURNING version`, []any{localpart, algorithm, authData}, &v)
	return v, err
}

// LatestBackupVersion reads the user's newest version that is not deleted; ErrNotFound if none.
func (c Conn) LatestBackupVersion(ctx context.Context, localpart string) (BackupVersion, error) {
	return scanBackupVersion(c.row(ctx, `SELECT `+backupVersionColumns+` FROM key_backup_versions
		WHERE localpart = $1 AND NOT deleted ORDER BY version DESC LIMIT 1`, localpart))
}

// BackupVersion reads a version (deleted ones too); ErrNotFound if it never existed.
func (c Conn) BackupVersion(ctx context.Context, localpart string, version int64) (BackupVersion, error) {
	return scanBackupVersion(c.row(ctx, `SELECT `+backupVersionColumns+` FROM key_backup_versions
		WHERE localpart = $1 AND version = $2`, localpart, version))
}

// LockBackupVersion reads a version that is not deleted and, in a write transaction, locks its row
// until the transaction ends, so that the version cannot be deleted under a change of its keys;
// ErrNotFound if there is no such version.
func (c Conn) LockBackupVersion(ctx context.Context, localpart string, version int64) (BackupVersion, error) {
	return scanBackupVersion(c.row(ctx, `UPDATE key_backup_versions SET etag = etag
		WHERE localpart = $1 AND version = $2 AND NOT deleted RETURNING `+backupVersionColumns, localpart, version))
}

// SetBackupAuthData replaces the auth_data of a version that is not deleted; ErrNotFound if none.
func (c Conn) SetBackupAuthData(ctx context.Context, localpart string, version int64, authData string) error {
	return c.execOne(ctx, `UPDATE key_backup_versions SET auth_data = $3 WHERE localpart = $1 AND version = $2 AND NOT deleted`,
		localpart, version, authData)
}

// DeleteBackupVersion marks a version deleted and deletes its keys. Deleting a deleted version is
// not an error; ErrNotFound if it never existed.
func (c Conn) DeleteBackupVersion(ctx context.Context, localpart string, version int64) error {
	if err := c.execOne(ctx, `UPDATE key_backup_versions SET deleted = TRUE, key_count = 0, etag = etag + 1
		WHERE localpart = $1 AND version = $2`, localpart, version); err != nil {
		return err
	}
	_, err := c.exec(ctx, `DELETE FROM key_backup_keys WHERE localpart = $1 AND version = $2`, localpart, version)
	return err
}

// BumpBackupVersion records a change of a version's keys: a new etag, and the key count changed
// by delta. It returns the new etag and count.
func (c Conn) BumpBackupVersion(ctx context.Context, localpart string, version, delta int64) (etag, count int64, err error) {
	err = c.scanOne(ctx, `UPDATE key_backup_versions SET etag = etag + 1, key_count = key_count + $3
		WHERE localpart = $1 AND version = $2 RETURNING etag, key_count`, []any{localpart, version, delta}, &etag, &count)
	return etag, count, err
}

const backupKeyColumns = `room_id, session_id, first_message_index, forwarded_count, is_verified, session_data`

func scanBackupKey(r *sql.Rows) (BackupKey, error) {
	var k BackupKey
	return k, r.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &k.SessionData)
}

// BackupKeys reads the keys of a version: all of them (roomID ""), a room's (sessionID ""), or
// one session's, ordered by room and session.
func (c Conn) BackupKeys(ctx context.Context, localpart string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	q := `SELECT ` + backupKeyColumns + ` FROM key_backup_keys WHERE localpart = $1 AND version = $2`
	args := []any{localpart, version}
	if roomID != "" {
		q += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			q += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	return collect(ctx, c, q+` ORDER BY room_id, session_id`, args, scanBackupKey)
}

// BackupKeysOfSessions reads the keys of the given sessions of a room that exist.
func (c Conn) BackupKeysOfSessions(ctx context.Context, localpart string, version int64, roomID string, sessionIDs []string) ([]BackupKey, error) {
	var out []BackupKey
	for start := 0; start < len(sessionIDs); start += 500 {
		chunk := sessionIDs[start:min(start+500, len(sessionIDs))]
		keys, err := collect(ctx, c, `SELECT `+backupKeyColumns+` FROM key_backup_keys
			WHERE localpart = $1 AND version = $2 AND room_id = $3 AND session_id IN (`+placeholders(4, len(chunk))+`)`,
			append([]any{localpart, version, roomID}, stringArgs(chunk)...), scanBackupKey)
		if err != nil {
			return nil, err
		}
		out = append(out, keys...)
	}
	return out, nil
}

// PutBackupKey stores a session key, replacing the stored one of the session if any.
func (c Conn) PutBackupKey(ctx context.Context, localpart string, version int64, k BackupKey) error {
	_, err := c.exec(ctx, `INSERT INTO key_backup_keys (localpart, version, room_id, session_id, first_message_index,
			forwarded_count, is_verified, session_data)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (localpart, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
			forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
		localpart, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, k.SessionData)
	return err
}

// DeleteBackupKeys deletes the keys of a version: all of them (roomID ""), a room's (sessionID ""),
// or one session's. It returns how many it deleted.
func (c Conn) DeleteBackupKeys(ctx context.Context, localpart string, version int64, roomID, sessionID string) (int64, error) {
	q := `DELETE FROM key_backup_keys WHERE localpart = $1 AND version = $2`
	args := []any{localpart, version}
	if roomID != "" {
		q += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			q += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	res, err := c.exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
