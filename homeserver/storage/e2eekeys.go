package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// End-to-end encryption keys (migration 0006): device keys, one-time and fallback keys,
// cross-signing keys and signatures, and the device_lists stream.

// StreamDeviceLists is the stream_counters name of device-list changes.
const StreamDeviceLists = "device_lists"

// DeviceKeys is the stored identity-key object of a local device.
type DeviceKeys struct {
	Localpart   string
	DeviceID    string
	UserID      string
	KeyJSON     []byte  // canonical JSON without "unsigned"
	DisplayName *string // of the device, nil when it has none (or is gone)
}

// DeviceKeysJSON reads the key object of one device; ErrNotFound when it has none.
func (c Conn) DeviceKeysJSON(ctx context.Context, localpart, deviceID string) ([]byte, error) {
	var v string
	err := c.scanOne(ctx, `SELECT key_json FROM device_keys WHERE localpart = $1 AND device_id = $2`,
		[]any{localpart, deviceID}, &v)
	return []byte(v), err
}

// PutDeviceKeys stores (or replaces) the key object of a device.
func (c Conn) PutDeviceKeys(ctx context.Context, localpart, deviceID, userID string, keyJSON []byte, ts int64) error {
	_, err := c.exec(ctx, `INSERT INTO device_keys (localpart, device_id, user_id, key_json, created_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (localpart, device_id) DO UPDATE SET key_json = excluded.key_json`,
		localpart, deviceID, userID, string(keyJSON), ts)
	return err
}

// DeviceKeysOf lists the device keys of the users (by localpart) with the devices' display names.
func (c Conn) DeviceKeysOf(ctx context.Context, localparts []string) ([]DeviceKeys, error) {
	var out []DeviceKeys
	for start := 0; start < len(localparts); start += maxRoomsPerQuery {
		chunk := localparts[start:min(start+maxRoomsPerQuery, len(localparts))]
		ks, err := collect(ctx, c, `SELECT k.localpart, k.device_id, k.user_id, k.key_json, d.display_name FROM device_keys k
			LEFT JOIN devices d ON d.localpart = k.localpart AND d.device_id = k.device_id
			WHERE k.localpart IN (`+placeholders(1, len(chunk))+`) ORDER BY k.localpart, k.device_id`,
			stringArgs(chunk), func(r *sql.Rows) (DeviceKeys, error) {
				var k DeviceKeys
				var js string
				var name sql.NullString
				err := r.Scan(&k.Localpart, &k.DeviceID, &k.UserID, &js, &name)
				k.KeyJSON = []byte(js)
				if name.Valid {
					k.DisplayName = &name.String
				}
				return k, err
			})
		if err != nil {
			return nil, err
		}
		out = append(out, ks...)
	}
	return out, nil
}

// OneTimeKey is one uploaded one-time or fallback key.
type OneTimeKey struct {
	Algorithm string
	KeyID     string // without the algorithm
	KeyJSON   []byte // the key's value: a JSON string or object
}

// maxKeysPerInsert bounds the rows of one multi-row INSERT of one-time keys.
const maxKeysPerInsert = 100

// AddOneTimeKeys stores new one-time keys of a device and returns those whose (algorithm, key ID)
// was already stored: the caller decides whether a re-upload is identical or a conflict.
func (c Conn) AddOneTimeKeys(ctx context.Context, localpart, deviceID string, keys []OneTimeKey, ts int64) ([]OneTimeKey, error) {
	var existing []OneTimeKey
	for start := 0; start < len(keys); start += maxKeysPerInsert {
		chunk := keys[start:min(start+maxKeysPerInsert, len(keys))]
		args := make([]any, 0, 3+2*len(chunk)+len(chunk))
		args = append(args, localpart, deviceID, ts)
		q := `INSERT INTO one_time_keys (localpart, device_id, algorithm, key_id, key_json, created_ts) VALUES `
		for i, k := range chunk {
			if i > 0 {
				q += ", "
			}
			n := len(args)
			q += "($1, $2, $" + itoa(n+1) + ", $" + itoa(n+2) + ", $" + itoa(n+3) + ", $3)"
			args = append(args, k.Algorithm, k.KeyID, string(k.KeyJSON))
		}
		q += ` ON CONFLICT (localpart, device_id, algorithm, key_id) DO NOTHING RETURNING algorithm, key_id`
		inserted, err := collect(ctx, c, q, args, func(r *sql.Rows) ([2]string, error) {
			var x [2]string
			return x, r.Scan(&x[0], &x[1])
		})
		if err != nil {
			return nil, err
		}
		if len(inserted) == len(chunk) {
			continue
		}
		done := make(map[[2]string]bool, len(inserted))
		for _, x := range inserted {
			done[x] = true
		}
		for _, k := range chunk {
			if done[[2]string{k.Algorithm, k.KeyID}] {
				continue
			}
			var js string
			err := c.scanOne(ctx, `SELECT key_json FROM one_time_keys WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
				[]any{localpart, deviceID, k.Algorithm, k.KeyID}, &js)
			if err != nil {
				return nil, fmt.Errorf("storage: read conflicting one-time key: %w", err)
			}
			existing = append(existing, OneTimeKey{Algorithm: k.Algorithm, KeyID: k.KeyID, KeyJSON: []byte(js)})
		}
	}
	return existing, nil
}

// CountOneTimeKeys counts the unclaimed one-time keys of a device, all algorithms together.
func (c Conn) CountOneTimeKeys(ctx context.Context, localpart, deviceID string) (int, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM one_time_keys WHERE localpart = $1 AND device_id = $2`,
		[]any{localpart, deviceID}, &n)
	return n, err
}

// KeyCounts reads, with one query, the unclaimed one-time keys of a device per algorithm and the
// algorithms of its unused fallback keys.
func (c Conn) KeyCounts(ctx context.Context, localpart, deviceID string) (map[string]int, []string, error) {
	type row struct {
		kind, alg string
		n         int
	}
	rows, err := collect(ctx, c, `SELECT 'o', algorithm, COUNT(*) FROM one_time_keys WHERE localpart = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL
		SELECT 'f', algorithm, 0 FROM fallback_keys WHERE localpart = $1 AND device_id = $2 AND NOT used`,
		[]any{localpart, deviceID}, func(r *sql.Rows) (row, error) {
			var x row
			return x, r.Scan(&x.kind, &x.alg, &x.n)
		})
	if err != nil {
		return nil, nil, err
	}
	counts := map[string]int{}
	fallback := []string{}
	for _, x := range rows {
		if x.kind == "o" {
			counts[x.alg] = x.n
		} else {
			fallback = append(fallback, x.alg)
		}
	}
	return counts, fallback, nil
}

// maxClaimAttempts bounds the retries of ClaimOneTimeKey; each retry means another transaction
// took the key this one picked, so it is only reached under absurd contention.
const maxClaimAttempts = 1000

// ClaimOneTimeKey removes and returns the oldest one-time key of a device for an algorithm;
// ErrNotFound when none is left.
//
// The key is picked and deleted by one statement, so it is handed out once: on SQLite writers are
// serialised; on PostgreSQL a concurrent claim that picked the same key waits for its row lock and
// then deletes nothing (the row is gone), and this function picks again with a fresh snapshot.
// Callers claiming for several devices in one transaction go in a fixed order (see e2ee), so two
// claims cannot wait on each other's rows.
func (c Conn) ClaimOneTimeKey(ctx context.Context, localpart, deviceID, algorithm string) (OneTimeKey, error) {
	k := OneTimeKey{Algorithm: algorithm}
	for range maxClaimAttempts {
		var js string
		err := c.scanOne(ctx, `DELETE FROM one_time_keys WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
				SELECT key_id FROM one_time_keys WHERE localpart = $1 AND device_id = $2 AND algorithm = $3
				ORDER BY created_ts, key_id LIMIT 1)
			RETURNING key_id, key_json`, []any{localpart, deviceID, algorithm}, &k.KeyID, &js)
		if err == nil {
			k.KeyJSON = []byte(js)
			return k, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return k, err
		}
		var one int
		err = c.scanOne(ctx, `SELECT 1 FROM one_time_keys WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 LIMIT 1`,
			[]any{localpart, deviceID, algorithm}, &one)
		if err != nil {
			return k, err // ErrNotFound: none left
		}
	}
	return k, fmt.Errorf("storage: claim one-time key of %s/%s: gave up after %d attempts", localpart, deviceID, maxClaimAttempts)
}

// PutFallbackKey stores the fallback key of an algorithm, replacing the previous one. Uploading
// the key that is already stored changes nothing (a used key stays used).
func (c Conn) PutFallbackKey(ctx context.Context, localpart, deviceID string, k OneTimeKey) error {
	_, err := c.exec(ctx, `INSERT INTO fallback_keys (localpart, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)
		ON CONFLICT (localpart, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE
		WHERE fallback_keys.key_id <> excluded.key_id OR fallback_keys.key_json <> excluded.key_json`,
		localpart, deviceID, k.Algorithm, k.KeyID, string(k.KeyJSON))
	return err
}

// ClaimFallbackKey returns the fallback key of a device for an algorithm and marks it used (it
// stays claimable); ErrNotFound when there is none.
func (c Conn) ClaimFallbackKey(ctx context.Context, localpart, deviceID, algorithm string) (OneTimeKey, error) {
	k := OneTimeKey{Algorithm: algorithm}
	var js string
	err := c.scanOne(ctx, `UPDATE fallback_keys SET used = TRUE WHERE localpart = $1 AND device_id = $2 AND algorithm = $3
		RETURNING key_id, key_json`, []any{localpart, deviceID, algorithm}, &k.KeyID, &js)
	k.KeyJSON = []byte(js)
	return k, err
}

// DeleteDeviceKeys removes the device keys, one-time and fallback keys of a device and the
// signatures on or by it, and records a device-list change of its user when it had device keys.
// It runs inside the transaction that deletes the device.
//
// Lock order: transactions that change device keys, cross-signing keys or signatures lock the
// device_lists counter row (LockPosition) before any key row, so on PostgreSQL they queue on it
// instead of deadlocking, and each one reads the keys the previous one committed.
func (c Conn) DeleteDeviceKeys(ctx context.Context, localpart, deviceID string) error {
	// The device_lists counter first, as every writer of device keys takes it (lock order).
	if _, err := c.LockPosition(ctx, StreamDeviceLists); err != nil {
		return err
	}
	var userID string
	err := c.scanOne(ctx, `DELETE FROM device_keys WHERE localpart = $1 AND device_id = $2 RETURNING user_id`,
		[]any{localpart, deviceID}, &userID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	for _, q := range []string{
		`DELETE FROM one_time_keys WHERE localpart = $1 AND device_id = $2`,
		`DELETE FROM fallback_keys WHERE localpart = $1 AND device_id = $2`,
	} {
		if _, err := c.exec(ctx, q, localpart, deviceID); err != nil {
			return err
		}
	}
	if userID == "" {
		return nil
	}
	if _, err := c.exec(ctx, `DELETE FROM cross_signing_signatures WHERE (target_user_id = $1 AND target_key_id = $2)
		OR (signer_user_id = $1 AND signer_key_id = $3)`, userID, deviceID, "ed25519:"+deviceID); err != nil {
		return err
	}
	_, err = c.RecordDeviceListChange(ctx, userID)
	return err
}

// RecordDeviceListChange records, at a new device_lists position, that the users' devices or
// cross-signing keys changed, and returns the position.
func (c Conn) RecordDeviceListChange(ctx context.Context, userIDs ...string) (int64, error) {
	pos, err := c.NextPosition(ctx, StreamDeviceLists)
	if err != nil {
		return 0, err
	}
	for _, u := range userIDs {
		if _, err := c.exec(ctx, `INSERT INTO device_list_changes (user_id, pos) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET pos = excluded.pos`, u, pos); err != nil {
			return 0, err
		}
	}
	return pos, nil
}

// DeviceListChanges lists the users whose latest device-list change has a position in (from, to].
func (c Conn) DeviceListChanges(ctx context.Context, from, to int64) ([]string, error) {
	if to <= from {
		return nil, nil
	}
	return collect(ctx, c, `SELECT user_id FROM device_list_changes WHERE pos > $1 AND pos <= $2 ORDER BY pos, user_id`,
		[]any{from, to}, scanString)
}

// CrossSigningKey is a user's current key of one usage.
type CrossSigningKey struct {
	UserID    string
	Usage     string // master, self_signing or user_signing
	PublicKey string // unpadded base64
	KeyJSON   []byte // canonical JSON without "unsigned"
	StreamPos int64
}

// CrossSigningKeysOf lists the cross-signing keys of the users.
func (c Conn) CrossSigningKeysOf(ctx context.Context, userIDs []string) ([]CrossSigningKey, error) {
	var out []CrossSigningKey
	for start := 0; start < len(userIDs); start += maxRoomsPerQuery {
		chunk := userIDs[start:min(start+maxRoomsPerQuery, len(userIDs))]
		ks, err := collect(ctx, c, `SELECT user_id, key_usage, public_key, key_json, stream_pos FROM cross_signing_keys
			WHERE user_id IN (`+placeholders(1, len(chunk))+`)`, stringArgs(chunk), func(r *sql.Rows) (CrossSigningKey, error) {
			var k CrossSigningKey
			var js string
			err := r.Scan(&k.UserID, &k.Usage, &k.PublicKey, &js, &k.StreamPos)
			k.KeyJSON = []byte(js)
			return k, err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, ks...)
	}
	return out, nil
}

// PutCrossSigningKey stores (or replaces) a user's key of one usage.
func (c Conn) PutCrossSigningKey(ctx context.Context, k CrossSigningKey) error {
	_, err := c.exec(ctx, `INSERT INTO cross_signing_keys (user_id, key_usage, public_key, key_json, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, key_usage) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json,
			stream_pos = excluded.stream_pos`, k.UserID, k.Usage, k.PublicKey, string(k.KeyJSON), k.StreamPos)
	return err
}

// KeySignature is a signature uploaded through /keys/signatures/upload.
type KeySignature struct {
	TargetUserID string
	TargetKeyID  string // device ID or master public key
	SignerUserID string
	SignerKeyID  string // "ed25519:..."
	Signature    string
}

// PutKeySignature stores a signature, replacing an older one by the same key on the same target.
func (c Conn) PutKeySignature(ctx context.Context, s KeySignature) error {
	_, err := c.exec(ctx, `INSERT INTO cross_signing_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
		DO UPDATE SET signature = excluded.signature`, s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature)
	return err
}

// KeySignaturesOn lists the uploaded signatures on keys of the target users.
func (c Conn) KeySignaturesOn(ctx context.Context, targetUserIDs []string) ([]KeySignature, error) {
	var out []KeySignature
	for start := 0; start < len(targetUserIDs); start += maxRoomsPerQuery {
		chunk := targetUserIDs[start:min(start+maxRoomsPerQuery, len(targetUserIDs))]
		ss, err := collect(ctx, c, `SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
			FROM cross_signing_signatures WHERE target_user_id IN (`+placeholders(1, len(chunk))+`)
			ORDER BY target_user_id, target_key_id, signer_user_id, signer_key_id`, stringArgs(chunk),
			func(r *sql.Rows) (KeySignature, error) {
				var s KeySignature
				return s, r.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature)
			})
		if err != nil {
			return nil, err
		}
		out = append(out, ss...)
	}
	return out, nil
}

// DeleteKeySignaturesBy removes the signatures made by a key (when the key is replaced).
func (c Conn) DeleteKeySignaturesBy(ctx context.Context, signerUserID, signerKeyID string) error {
	_, err := c.exec(ctx, `DELETE FROM cross_signing_signatures WHERE signer_user_id = $1 AND signer_key_id = $2`,
		signerUserID, signerKeyID)
	return err
}

// DeleteKeySignaturesOn removes the signatures on one key (when a master key is replaced).
func (c Conn) DeleteKeySignaturesOn(ctx context.Context, targetUserID, targetKeyID string) error {
	_, err := c.exec(ctx, `DELETE FROM cross_signing_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
		targetUserID, targetKeyID)
	return err
}

// MembershipChangesInRoomsOf lists the membership events with an events stream position in
// (from, to] of the rooms where userID has a current membership (joined, left, ...), in stream
// order: what /keys/changes needs to find users who started or stopped sharing a room.
func (c Conn) MembershipChangesInRoomsOf(ctx context.Context, userID string, from, to int64) ([]MembershipChange, error) {
	if to <= from {
		return nil, nil
	}
	return collect(ctx, c, `SELECT e.room_id, e.state_key, COALESCE(e.membership, ''), e.stream_pos FROM events e
		WHERE e.type = 'm.room.member' AND e.stream_pos > $2 AND e.stream_pos <= $3 AND NOT e.rejected AND NOT e.soft_failed
			AND e.room_id IN (SELECT m.room_id FROM current_state m WHERE m.type = 'm.room.member' AND m.state_key = $1)
		ORDER BY e.stream_pos`, []any{userID, from, to}, func(r *sql.Rows) (MembershipChange, error) {
		var m MembershipChange
		return m, r.Scan(&m.RoomID, &m.UserID, &m.Membership, &m.StreamPos)
	})
}

// DeleteUserE2EE removes what end-to-end encryption keeps per user rather than per device, when
// the account is deactivated: cross-signing keys, the signatures the user made and received, the
// key backups, and the dehydrated device record. Devices and their keys go with the devices.
func (c Conn) DeleteUserE2EE(ctx context.Context, localpart, userID string) error {
	for _, q := range []struct {
		sql string
		arg string
	}{
		{`DELETE FROM cross_signing_keys WHERE user_id = $1`, userID},
		{`DELETE FROM cross_signing_signatures WHERE target_user_id = $1`, userID},
		{`DELETE FROM cross_signing_signatures WHERE signer_user_id = $1`, userID},
		{`DELETE FROM key_backup_keys WHERE localpart = $1`, localpart},
		{`DELETE FROM key_backup_versions WHERE localpart = $1`, localpart},
		{`DELETE FROM dehydrated_devices WHERE localpart = $1`, localpart},
	} {
		if _, err := c.exec(ctx, q.sql, q.arg); err != nil {
			return err
		}
	}
	_, err := c.RecordDeviceListChange(ctx, userID)
	return err
}
