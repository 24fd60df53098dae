package e2ee

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Server-side key backups (module "End-to-End Encryption", "Server-side key backups"). Each user
// has numbered backup versions; keys can be written to the newest one only, read and deleted in
// any that exists. The server stores the clients' ciphertext and never looks inside.

// ErrWrongRoomKeysVersion is M_WRONG_ROOM_KEYS_VERSION (403): keys were written to a version that
// is not the current one. The error carries current_version.
var ErrWrongRoomKeysVersion = &spec.Error{Code: "M_WRONG_ROOM_KEYS_VERSION", Status: http.StatusForbidden, Message: "Wrong backup version"}

var errUnknownBackupVersion = spec.ErrNotFound.With("Unknown backup version")

// Backup is the key backup service. Its methods take the owner's localpart: a user only ever
// reaches their own backup.
type Backup struct {
	store *storage.Store
	log   *slog.Logger
}

// NewBackup builds the service.
func NewBackup(store *storage.Store, log *slog.Logger) *Backup {
	return &Backup{store: store, log: log}
}

// BackupVersion is the response of GET /room_keys/version[/{version}].
type BackupVersion struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// BackupUpdate is the response of the key-changing endpoints: the version's etag and key count.
type BackupUpdate struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

// BackupKey is one backed-up session key (KeyBackupData).
type BackupKey struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// BackupRoom are the backed-up keys of one room (RoomKeyBackup).
type BackupRoom struct {
	Sessions map[string]BackupKey `json:"sessions"`
}

// backupKeyWins reports whether key a should replace the stored key b, by the spec's rule: a verified
// key wins over an unverified one; then the lower first_message_index; then the lower
// forwarded_count. On a tie the stored key stays.
func backupKeyWins(a, b BackupKey) bool {
	if a.IsVerified != b.IsVerified {
		return a.IsVerified
	}
	if a.FirstMessageIndex != b.FirstMessageIndex {
		return a.FirstMessageIndex < b.FirstMessageIndex
	}
	return a.ForwardedCount < b.ForwardedCount
}

func rawIsObject(raw json.RawMessage) bool {
	c := bytes.TrimSpace(raw)
	return len(c) > 0 && c[0] == '{'
}

// parseBackupVersion reads a version ID; what is not one of ours is a version that does not exist.
func parseBackupVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0 && strconv.FormatInt(n, 10) == v
}

func backupVersionJSON(v storage.BackupVersion) BackupVersion {
	return BackupVersion{Algorithm: v.Algorithm, AuthData: json.RawMessage(v.AuthData), Count: v.KeyCount,
		ETag: strconv.FormatInt(v.ETag, 10), Version: strconv.FormatInt(v.Version, 10)}
}

func checkBackupVersionBody(algorithm string, authData json.RawMessage) error {
	if algorithm == "" {
		return spec.ErrMissingParam.With("algorithm is required")
	}
	if len(authData) == 0 || string(authData) == "null" {
		return spec.ErrMissingParam.With("auth_data is required")
	}
	if !rawIsObject(authData) {
		return spec.ErrBadJSON.With("auth_data must be an object")
	}
	return nil
}

// CreateVersion is POST /room_keys/version: a new backup version, which becomes the current one.
func (b *Backup) CreateVersion(ctx context.Context, localpart, algorithm string, authData json.RawMessage) (string, error) {
	if err := checkBackupVersionBody(algorithm, authData); err != nil {
		return "", err
	}
	var v int64
	var err error
	// Two creations at once may pick the same number (PostgreSQL): the loser tries again.
	for range 3 {
		err = b.store.Write(ctx, func(c storage.Conn) error {
			v, err = c.CreateBackupVersion(ctx, localpart, algorithm, string(authData))
			return err
		})
		if !errors.Is(err, storage.ErrConflict) {
			break
		}
	}
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(v, 10), nil
}

// Version is GET /room_keys/version[/{version}]: a version that is not deleted, or the current
// one for version "".
func (b *Backup) Version(ctx context.Context, localpart, version string) (BackupVersion, error) {
	c := b.store.Read()
	if version == "" {
		v, err := c.LatestBackupVersion(ctx, localpart)
		if errors.Is(err, storage.ErrNotFound) {
			return BackupVersion{}, spec.ErrNotFound.With("No current backup version")
		}
		return backupVersionJSON(v), err
	}
	v, err := b.existing(ctx, c, localpart, version)
	if err != nil {
		return BackupVersion{}, err
	}
	return backupVersionJSON(v), nil
}

// existing reads a version that is not deleted; M_NOT_FOUND if there is none.
func (b *Backup) existing(ctx context.Context, c storage.Conn, localpart, version string) (storage.BackupVersion, error) {
	n, ok := parseBackupVersion(version)
	if !ok {
		return storage.BackupVersion{}, errUnknownBackupVersion
	}
	v, err := c.BackupVersion(ctx, localpart, n)
	if errors.Is(err, storage.ErrNotFound) || err == nil && v.Deleted {
		return v, errUnknownBackupVersion
	}
	return v, err
}

// UpdateVersion is PUT /room_keys/version/{version}: only auth_data changes; the algorithm must be
// the version's, and bodyVersion, if not "", the version of the path.
func (b *Backup) UpdateVersion(ctx context.Context, localpart, version, bodyVersion, algorithm string, authData json.RawMessage) error {
	if err := checkBackupVersionBody(algorithm, authData); err != nil {
		return err
	}
	if bodyVersion != "" && bodyVersion != version {
		return spec.ErrInvalidParam.With("The version in the body does not match the version in the path")
	}
	return b.store.Write(ctx, func(c storage.Conn) error {
		v, err := b.existing(ctx, c, localpart, version)
		if err != nil {
			return err
		}
		if v.Algorithm != algorithm {
			return spec.ErrInvalidParam.With("Algorithm does not match")
		}
		return c.SetBackupAuthData(ctx, localpart, v.Version, string(authData))
	})
}

// DeleteVersion is DELETE /room_keys/version/{version}: the version and all its keys go. Deleting
// a deleted version succeeds; one that never existed is M_NOT_FOUND.
func (b *Backup) DeleteVersion(ctx context.Context, localpart, version string) error {
	n, ok := parseBackupVersion(version)
	if !ok {
		return errUnknownBackupVersion
	}
	err := b.store.Write(ctx, func(c storage.Conn) error {
		v, err := c.BackupVersion(ctx, localpart, n)
		if err != nil || v.Deleted {
			return err
		}
		return c.DeleteBackupVersion(ctx, localpart, n)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return errUnknownBackupVersion
	}
	return err
}

// PutKeys is PUT /room_keys/keys[/{roomId}[/{sessionId}]]: it stores keys (room ID → session ID →
// key) in the current version, keeping for each session the better of the stored and the new key.
// A version that is not the current one is M_WRONG_ROOM_KEYS_VERSION; no backup, M_NOT_FOUND.
func (b *Backup) PutKeys(ctx context.Context, localpart, version string, rooms map[string]map[string]BackupKey) (BackupUpdate, error) {
	for roomID, sessions := range rooms {
		if !strings.HasPrefix(roomID, "!") || len(roomID) > 255 {
			return BackupUpdate{}, spec.ErrInvalidParam.Withf("Invalid room ID %q", clipID(roomID, 64))
		}
		for sessionID, k := range sessions {
			switch {
			case sessionID == "" || len(sessionID) > 255:
				return BackupUpdate{}, spec.ErrInvalidParam.Withf("Invalid session ID %q", clipID(sessionID, 64))
			case k.FirstMessageIndex < 0 || k.ForwardedCount < 0:
				return BackupUpdate{}, spec.ErrInvalidParam.With("first_message_index and forwarded_count must not be negative")
			case !rawIsObject(k.SessionData):
				return BackupUpdate{}, spec.ErrBadJSON.With("session_data must be an object")
			}
		}
	}
	var out BackupUpdate
	err := b.store.Write(ctx, func(c storage.Conn) error {
		cur, err := c.LatestBackupVersion(ctx, localpart)
		if errors.Is(err, storage.ErrNotFound) {
			return errUnknownBackupVersion
		}
		if err != nil {
			return err
		}
		if n, ok := parseBackupVersion(version); !ok || n != cur.Version {
			return ErrWrongRoomKeysVersion.WithField("current_version", strconv.FormatInt(cur.Version, 10))
		}
		if cur, err = c.LockBackupVersion(ctx, localpart, cur.Version); err != nil {
			if errors.Is(err, storage.ErrNotFound) { // deleted since we looked
				return errUnknownBackupVersion
			}
			return err
		}
		added, changed, err := putBackupKeys(ctx, c, localpart, cur.Version, rooms)
		if err != nil {
			return err
		}
		out = BackupUpdate{ETag: strconv.FormatInt(cur.ETag, 10), Count: cur.KeyCount}
		if !changed {
			return nil
		}
		etag, count, err := c.BumpBackupVersion(ctx, localpart, cur.Version, added)
		out = BackupUpdate{ETag: strconv.FormatInt(etag, 10), Count: count}
		return err
	})
	return out, err
}

// putBackupKeys writes the keys that win over the stored ones, rooms and sessions in a fixed order. It
// returns how many sessions are new and whether anything changed.
func putBackupKeys(ctx context.Context, c storage.Conn, localpart string, version int64, rooms map[string]map[string]BackupKey) (added int64, changed bool, err error) {
	roomIDs := make([]string, 0, len(rooms))
	for id := range rooms {
		roomIDs = append(roomIDs, id)
	}
	slices.Sort(roomIDs)
	for _, roomID := range roomIDs {
		sessions := rooms[roomID]
		ids := make([]string, 0, len(sessions))
		for id := range sessions {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		stored, err := c.BackupKeysOfSessions(ctx, localpart, version, roomID, ids)
		if err != nil {
			return 0, false, err
		}
		old := make(map[string]BackupKey, len(stored))
		for _, k := range stored {
			old[k.SessionID] = backupKeyOf(k)
		}
		for _, id := range ids {
			k := sessions[id]
			prev, exists := old[id]
			if exists && !backupKeyWins(k, prev) {
				continue
			}
			if !exists {
				added++
			}
			changed = true
			if err := c.PutBackupKey(ctx, localpart, version, storage.BackupKey{RoomID: roomID, SessionID: id,
				FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount, IsVerified: k.IsVerified,
				SessionData: string(k.SessionData)}); err != nil {
				return 0, false, err
			}
		}
	}
	return added, changed, nil
}

func backupKeyOf(k storage.BackupKey) BackupKey {
	return BackupKey{FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount, IsVerified: k.IsVerified,
		SessionData: json.RawMessage(k.SessionData)}
}

// Keys is GET /room_keys/keys[/{roomId}[/{sessionId}]]: the keys of a version that exists, as room
// ID → keys of the room; roomID and sessionID narrow it ("" for all).
func (b *Backup) Keys(ctx context.Context, localpart, version, roomID, sessionID string) (map[string]BackupRoom, error) {
	c := b.store.Read()
	v, err := b.existing(ctx, c, localpart, version)
	if err != nil {
		return nil, err
	}
	keys, err := c.BackupKeys(ctx, localpart, v.Version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	out := map[string]BackupRoom{}
	for _, k := range keys {
		r, ok := out[k.RoomID]
		if !ok {
			r = BackupRoom{Sessions: map[string]BackupKey{}}
			out[k.RoomID] = r
		}
		r.Sessions[k.SessionID] = backupKeyOf(k)
	}
	return out, nil
}

// DeleteKeys is DELETE /room_keys/keys[/{roomId}[/{sessionId}]]: it deletes keys of a version that
// exists (not necessarily the current one).
func (b *Backup) DeleteKeys(ctx context.Context, localpart, version, roomID, sessionID string) (BackupUpdate, error) {
	var out BackupUpdate
	err := b.store.Write(ctx, func(c storage.Conn) error {
		n, ok := parseBackupVersion(version)
		if !ok {
			return errUnknownBackupVersion
		}
		v, err := c.LockBackupVersion(ctx, localpart, n)
		if errors.Is(err, storage.ErrNotFound) {
			return errUnknownBackupVersion
		}
		if err != nil {
			return err
		}
		out = BackupUpdate{ETag: strconv.FormatInt(v.ETag, 10), Count: v.KeyCount}
		deleted, err := c.DeleteBackupKeys(ctx, localpart, n, roomID, sessionID)
		if err != nil || deleted == 0 {
			return err
		}
		etag, count, err := c.BumpBackupVersion(ctx, localpart, n, -deleted)
		out = BackupUpdate{ETag: strconv.FormatInt(etag, 10), Count: count}
		return err
	})
	return out, err
}
