package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// SetBackup gives the API the key backup service (before serving).
func (a *API) SetBackup(b *e2ee.Backup) { a.backup = b }

// routesRoomKeys mounts the server-side key backup endpoints (all "Rate-limited" in the spec).
func (a *API) routesRoomKeys(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, a.withBackup(fn)) }
	r = r.With(a.rateLimited)
	r.Post("/room_keys/version", h(a.createBackupVersion))
	r.Get("/room_keys/version", h(a.getBackupVersion))
	r.Get("/room_keys/version/{version}", h(a.getBackupVersion))
	r.Put("/room_keys/version/{version}", h(a.putBackupVersion))
	r.Delete("/room_keys/version/{version}", h(a.deleteBackupVersion))
	r.Put("/room_keys/keys", h(a.putRoomKeys))
	r.Get("/room_keys/keys", h(a.getRoomKeys))
	r.Delete("/room_keys/keys", h(a.deleteRoomKeys))
	r.Put("/room_keys/keys/{roomId}", h(a.putRoomKeys))
	r.Get("/room_keys/keys/{roomId}", h(a.getRoomKeys))
	r.Delete("/room_keys/keys/{roomId}", h(a.deleteRoomKeys))
	r.Put("/room_keys/keys/{roomId}/{sessionId}", h(a.putRoomKeys))
	r.Get("/room_keys/keys/{roomId}/{sessionId}", h(a.getRoomKeys))
	r.Delete("/room_keys/keys/{roomId}/{sessionId}", h(a.deleteRoomKeys))
}

func (a *API) withBackup(fn handler) handler {
	return func(r *http.Request) (any, error) {
		if a.backup == nil {
			return nil, spec.ErrUnrecognized.With("Key backup is not available")
		}
		return fn(r)
	}
}

// backupVersionBody is the body of POST and PUT /room_keys/version.
type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"` // PUT only
}

// createBackupVersion is POST /_matrix/client/v3/room_keys/version.
func (a *API) createBackupVersion(r *http.Request) (any, error) {
	var body backupVersionBody
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	v, err := a.backup.CreateVersion(r.Context(), callerOf(r).Localpart, body.Algorithm, body.AuthData)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": v}, nil
}

// getBackupVersion is GET /_matrix/client/v3/room_keys/version[/{version}] (without a version, the
// current one).
func (a *API) getBackupVersion(r *http.Request) (any, error) {
	return a.backup.Version(r.Context(), callerOf(r).Localpart, pathParam(r, "version"))
}

// putBackupVersion is PUT /_matrix/client/v3/room_keys/version/{version}.
func (a *API) putBackupVersion(r *http.Request) (any, error) {
	var body backupVersionBody
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	return empty, a.backup.UpdateVersion(r.Context(), callerOf(r).Localpart, pathParam(r, "version"), body.Version,
		body.Algorithm, body.AuthData)
}

// deleteBackupVersion is DELETE /_matrix/client/v3/room_keys/version/{version}.
func (a *API) deleteBackupVersion(r *http.Request) (any, error) {
	return empty, a.backup.DeleteVersion(r.Context(), callerOf(r).Localpart, pathParam(r, "version"))
}

// keyBackupData is KeyBackupData as a request carries it (every field is required).
type keyBackupData struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

func (k keyBackupData) key() (e2ee.BackupKey, error) {
	switch {
	case k.FirstMessageIndex == nil:
		return e2ee.BackupKey{}, missing("first_message_index")
	case k.ForwardedCount == nil:
		return e2ee.BackupKey{}, missing("forwarded_count")
	case k.IsVerified == nil:
		return e2ee.BackupKey{}, missing("is_verified")
	case len(k.SessionData) == 0 || string(k.SessionData) == "null":
		return e2ee.BackupKey{}, missing("session_data")
	}
	return e2ee.BackupKey{FirstMessageIndex: *k.FirstMessageIndex, ForwardedCount: *k.ForwardedCount, IsVerified: *k.IsVerified,
		SessionData: k.SessionData}, nil
}

type roomKeyBackup struct {
	Sessions map[string]keyBackupData `json:"sessions"`
}

func (b roomKeyBackup) keys() (map[string]e2ee.BackupKey, error) {
	if b.Sessions == nil {
		return nil, missing("sessions")
	}
	out := make(map[string]e2ee.BackupKey, len(b.Sessions))
	for id, k := range b.Sessions {
		key, err := k.key()
		if err != nil {
			return nil, err
		}
		out[id] = key
	}
	return out, nil
}

// backupVersionParam is the required ?version= of the /room_keys/keys endpoints.
func backupVersionParam(r *http.Request) (string, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return "", missing("version")
	}
	return v, nil
}

// putRoomKeys is PUT /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=.
func (a *API) putRoomKeys(r *http.Request) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	roomID, sessionID := pathParam(r, "roomId"), pathParam(r, "sessionId")
	rooms := map[string]map[string]e2ee.BackupKey{}
	switch {
	case sessionID != "":
		var body keyBackupData
		if err := decodeJSON(r, &body); err != nil {
			return nil, err
		}
		k, err := body.key()
		if err != nil {
			return nil, err
		}
		rooms[roomID] = map[string]e2ee.BackupKey{sessionID: k}
	case roomID != "":
		var body roomKeyBackup
		if err := decodeJSON(r, &body); err != nil {
			return nil, err
		}
		if rooms[roomID], err = body.keys(); err != nil {
			return nil, err
		}
	default:
		var body struct {
			Rooms map[string]roomKeyBackup `json:"rooms"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return nil, err
		}
		if body.Rooms == nil {
			return nil, missing("rooms")
		}
		for id, room := range body.Rooms {
			if rooms[id], err = room.keys(); err != nil {
				return nil, err
			}
		}
	}
	return a.backup.PutKeys(r.Context(), callerOf(r).Localpart, version, rooms)
}

// getRoomKeys is GET /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=.
func (a *API) getRoomKeys(r *http.Request) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	roomID, sessionID := pathParam(r, "roomId"), pathParam(r, "sessionId")
	rooms, err := a.backup.Keys(r.Context(), callerOf(r).Localpart, version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != "":
		k, ok := rooms[roomID].Sessions[sessionID]
		if !ok {
			return nil, spec.ErrNotFound.With("Key not found")
		}
		return k, nil
	case roomID != "":
		room, ok := rooms[roomID]
		if !ok {
			room = e2ee.BackupRoom{Sessions: map[string]e2ee.BackupKey{}}
		}
		return room, nil
	}
	return map[string]any{"rooms": rooms}, nil
}

// deleteRoomKeys is DELETE /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=.
func (a *API) deleteRoomKeys(r *http.Request) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	return a.backup.DeleteKeys(r.Context(), callerOf(r).Localpart, version, pathParam(r, "roomId"), pathParam(r, "sessionId"))
}
