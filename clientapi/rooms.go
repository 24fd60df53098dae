package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// routesRooms mounts room creation, membership, sending and reading.
func (a *API) routesRooms(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.With(a.rateLimited).Post("/createRoom", h(a.createRoom))
	r.Get("/joined_rooms", h(a.joinedRooms))
	r.With(a.rateLimited).Post("/join/{roomIdOrAlias}", h(a.joinByIDOrAlias))
	r.With(a.rateLimited).Post("/rooms/{roomId}/join", h(a.joinRoom))
	r.Post("/rooms/{roomId}/leave", h(a.membershipOf(room.MembershipLeave, false)))
	r.With(a.rateLimited).Post("/rooms/{roomId}/invite", h(a.membershipOf(room.MembershipInvite, true)))
	r.Post("/rooms/{roomId}/kick", h(a.membershipOf(room.MembershipLeave, true)))
	r.Post("/rooms/{roomId}/ban", h(a.membershipOf(room.MembershipBan, true)))
	r.Post("/rooms/{roomId}/unban", h(a.unban))
	r.Put("/rooms/{roomId}/send/{eventType}/{txnId}", h(a.sendEvent))
	r.Put("/rooms/{roomId}/state/{eventType}", h(a.putState))
	r.Put("/rooms/{roomId}/state/{eventType}/*", h(a.putState))
	r.Put("/rooms/{roomId}/redact/{eventId}/{txnId}", h(a.redact))
	r.Get("/rooms/{roomId}/messages", h(a.messages))
	r.Get("/rooms/{roomId}/context/{eventId}", h(a.eventContext))
	r.Get("/rooms/{roomId}/event/{eventId}", h(a.getEvent))
	r.Get("/rooms/{roomId}/state", h(a.getState))
	r.Get("/rooms/{roomId}/state/{eventType}", h(a.getStateEvent))
	r.Get("/rooms/{roomId}/state/{eventType}/*", h(a.getStateEvent))
	r.Get("/rooms/{roomId}/members", h(a.members))
	r.Get("/rooms/{roomId}/joined_members", h(a.joinedMembers))
}

type createRoomRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      string            `json:"name"`
	Topic                     string            `json:"topic"`
	Invite                    []string          `json:"invite"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           json.RawMessage   `json:"creation_content"`
	InitialState              []room.StateEvent `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage   `json:"power_level_content_override"`
}

// createRoom is POST /_matrix/client/v3/createRoom.
func (a *API) createRoom(r *http.Request) (any, error) {
	var req createRoomRequest
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	switch req.Visibility {
	case "", "public", "private":
	default:
		return nil, spec.ErrBadJSON.With("visibility must be public or private")
	}
	switch req.Preset {
	case "", room.PresetPrivateChat, room.PresetPublicChat, room.PresetTrustedPrivateChat:
	default:
		return nil, spec.ErrBadJSON.Withf("Unknown preset %q", req.Preset)
	}
	for _, u := range req.Invite {
		if _, err := spec.ParseUserID(u); err != nil {
			return nil, spec.ErrInvalidParam.Withf("Invalid user ID %q in invite", u)
		}
	}
	for _, ev := range req.InitialState {
		if ev.Type == "" {
			return nil, spec.ErrBadJSON.With("initial_state events need a type")
		}
		if ev.Type == room.TypeCreate || ev.Type == room.TypeMember || ev.Type == room.TypePowerLevels {
			return nil, spec.ErrInvalidRoomState.Withf("%s may not be given in initial_state", ev.Type)
		}
	}
	if len(req.CreationContent) > 0 && !isJSONObject(req.CreationContent) {
		return nil, spec.ErrBadJSON.With("creation_content must be an object")
	}
	c := callerOf(r)
	id, err := a.rooms.CreateRoom(r.Context(), room.CreateRequest{
		Creator: string(c.UserID), Visibility: req.Visibility, RoomAliasName: req.RoomAliasName, Name: req.Name, Topic: req.Topic,
		Invite: req.Invite, RoomVersion: req.RoomVersion, CreationContent: req.CreationContent, InitialState: req.InitialState,
		Preset: req.Preset, IsDirect: req.IsDirect, PowerLevelContentOverride: req.PowerLevelContentOverride,
		CreatorProfile: a.memberProfile(r, c.UserID.String()),
	})
	if err != nil {
		return nil, err
	}
	for _, u := range req.Invite {
		if _, srv, _ := strings.Cut(u, ":"); srv != a.cfg.ServerName && a.remote != nil {
			// The room exists; an invite its server refuses does not undo it.
			if _, err := a.remote.InviteRemote(r.Context(), id, a.sender(r, ""), u, "", req.IsDirect); err != nil {
				a.log.Warn("createRoom: remote invite failed", "room_id", id, "user_id", u, "err", err)
			}
		}
	}
	return map[string]string{"room_id": id}, nil
}

func isJSONObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && m != nil
}

// memberProfile is the user's displayname and avatar for their member events.
func (a *API) memberProfile(r *http.Request, userID string) room.MemberProfile {
	var p room.MemberProfile
	fields, err := a.accounts.Profile(r.Context(), userID)
	if err != nil {
		return p
	}
	_ = json.Unmarshal(fields["displayname"], &p.DisplayName)
	_ = json.Unmarshal(fields["avatar_url"], &p.AvatarURL)
	return p
}

func (a *API) sender(r *http.Request, txnID string) room.Sender {
	c := callerOf(r)
	return room.Sender{UserID: string(c.UserID), Localpart: c.Localpart, DeviceID: c.DeviceID, TxnID: txnID}
}

func (a *API) reader(r *http.Request) room.Reader {
	c := callerOf(r)
	return room.Reader{UserID: string(c.UserID), DeviceID: c.DeviceID}
}

// roomIDParam validates the {roomId} path parameter.
func roomIDParam(r *http.Request) (string, error) {
	id := pathParam(r, "roomId")
	if !strings.HasPrefix(id, "!") || len(id) > 255 {
		return "", spec.ErrInvalidParam.Withf("Invalid room ID %q", id)
	}
	return id, nil
}

// joinedRooms is GET /_matrix/client/v3/joined_rooms.
func (a *API) joinedRooms(r *http.Request) (any, error) {
	rooms, err := a.rooms.JoinedRooms(r.Context(), string(callerOf(r).UserID))
	if err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = []string{}
	}
	return map[string]any{"joined_rooms": rooms}, nil
}

type membershipRequest struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

// joinByIDOrAlias is POST /_matrix/client/v3/join/{roomIdOrAlias}.
func (a *API) joinByIDOrAlias(r *http.Request) (any, error) {
	target := pathParam(r, "roomIdOrAlias")
	var servers []string
	if strings.HasPrefix(target, "#") {
		roomID, _, err := a.rooms.ResolveAlias(r.Context(), target)
		if _, srv, _ := strings.Cut(target, ":"); errors.Is(err, spec.ErrNotFound) && a.remote != nil && srv != a.cfg.ServerName {
			roomID, servers, err = a.remote.ResolveRemoteAlias(r.Context(), target)
		}
		if err != nil {
			return nil, err
		}
		target = roomID
	} else if !strings.HasPrefix(target, "!") {
		return nil, spec.ErrInvalidParam.Withf("%q is neither a room ID nor an alias", target)
	}
	return a.joinThrough(r, target, servers)
}

// joinRoom is POST /_matrix/client/v3/rooms/{roomId}/join.
func (a *API) joinRoom(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return a.join(r, roomID)
}

func (a *API) join(r *http.Request, roomID string) (any, error) { return a.joinThrough(r, roomID, nil) }

// joinThrough joins a room of this server, or one on other servers through federation (asking
// servers, the via and server_name parameters and the room ID's server).
func (a *API) joinThrough(r *http.Request, roomID string, servers []string) (any, error) {
	var req membershipRequest
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	c := callerOf(r)
	profile := a.memberProfile(r, string(c.UserID))
	_, err := a.rooms.Join(r.Context(), roomID, a.sender(r, ""), profile, req.Reason)
	if errors.Is(err, spec.ErrNotFound) && a.remote != nil {
		if known, kerr := a.rooms.KnownRoom(r.Context(), roomID); kerr == nil && !known {
			_, err = a.remote.JoinRemote(r.Context(), roomID, joinServers(r, roomID, servers), string(c.UserID), profile, req.Reason)
		}
	}
	if errors.Is(err, spec.ErrNotFound) && a.remote == nil {
		return nil, spec.ErrNotFound.With("No known room with that ID on this server")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

// membershipOf serves leave, invite, kick and ban: withTarget says the body names the target user.
func (a *API) membershipOf(membership string, withTarget bool) handler {
	return func(r *http.Request) (any, error) {
		roomID, err := roomIDParam(r)
		if err != nil {
			return nil, err
		}
		var req membershipRequest
		if err := decodeOptionalJSON(r, &req); err != nil {
			return nil, err
		}
		target := string(callerOf(r).UserID)
		var profile room.MemberProfile
		if withTarget {
			if req.UserID == "" {
				return nil, missing("user_id")
			}
			if _, err := spec.ParseUserID(req.UserID); err != nil {
				return nil, spec.ErrInvalidParam.Withf("Invalid user ID %q", req.UserID)
			}
			target = req.UserID
			if membership == room.MembershipInvite {
				profile = a.memberProfile(r, target)
			}
		}
		if _, srv, _ := strings.Cut(target, ":"); membership == room.MembershipInvite && srv != a.cfg.ServerName && a.remote != nil {
			_, err = a.remote.InviteRemote(r.Context(), roomID, a.sender(r, ""), target, req.Reason, false)
		} else {
			_, err = a.rooms.Membership(r.Context(), roomID, a.sender(r, ""), target, membership, req.Reason, profile, false)
		}
		if errors.Is(err, spec.ErrNotFound) && membership == room.MembershipLeave && a.remote != nil && !withTarget {
			// An invite to a room this server is not in: reject it through the inviting server.
			_, err = a.remote.LeaveRemote(r.Context(), roomID, target, req.Reason)
		}
		if errors.Is(err, spec.ErrNotFound) && membership == room.MembershipLeave {
			return nil, spec.ErrForbidden.With("You are not in this room")
		}
		if err != nil {
			return nil, err
		}
		return empty, nil
	}
}

// unban is POST /_matrix/client/v3/rooms/{roomId}/unban: leave of a banned user, only if banned.
func (a *API) unban(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var req membershipRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.UserID == "" {
		return nil, missing("user_id")
	}
	if m, err := a.rooms.CurrentMembership(r.Context(), roomID, req.UserID); err != nil {
		return nil, err
	} else if m != room.MembershipBan {
		return nil, spec.ErrBadState.With("That user is not banned")
	}
	if _, err := a.rooms.Membership(r.Context(), roomID, a.sender(r, ""), req.UserID, room.MembershipLeave, req.Reason, room.MemberProfile{}, false); err != nil {
		return nil, err
	}
	return empty, nil
}

// sendEvent is PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}.
func (a *API) sendEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	content, err := readObject(r)
	if err != nil {
		return nil, err
	}
	typ := pathParam(r, "eventType")
	if typ == "" || len(typ) > 255 {
		return nil, spec.ErrInvalidParam.With("Invalid event type")
	}
	id, err := a.rooms.Send(r.Context(), roomID, a.sender(r, pathParam(r, "txnId")), typ, content)
	if err != nil {
		return nil, roomErr(err)
	}
	return eventIDBody{id}, nil
}

// eventIDBody is the answer of the endpoints that create an event (a struct: encoding/json writes
// it without the reflection and key sorting of a map).
type eventIDBody struct {
	EventID string `json:"event_id"`
}

// putState is PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) putState(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	content, err := readObject(r)
	if err != nil {
		return nil, err
	}
	typ := pathParam(r, "eventType")
	stateKey := wildcardParam(r)
	id, err := a.rooms.SetState(r.Context(), roomID, a.sender(r, ""), typ, stateKey, content)
	if err != nil {
		return nil, roomErr(err)
	}
	return eventIDBody{id}, nil
}

// wildcardParam is the percent-decoded state key of a /state/{type}/{stateKey} path ("" when the
// path stops at the type).
func wildcardParam(r *http.Request) string {
	return pathParam(r, "*")
}

// redact is PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}.
func (a *API) redact(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	id, err := a.rooms.Redact(r.Context(), roomID, a.sender(r, pathParam(r, "txnId")), pathParam(r, "eventId"), req.Reason)
	if err != nil {
		return nil, roomErr(err)
	}
	return eventIDBody{id}, nil
}

// readObject reads a JSON object body as raw bytes.
func readObject(r *http.Request) (json.RawMessage, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	// unmarshalObject's checks, without decoding what only the room writer reads.
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || !json.Valid(trimmed) {
		return nil, spec.ErrNotJSON.With("Content not JSON")
	}
	if trimmed[0] != '{' {
		return nil, spec.ErrBadJSON.With("The request body must be a JSON object")
	}
	return json.RawMessage(body), nil
}

// roomErr maps storage-level not-found on writes to the spec's answer for unknown rooms.
func roomErr(err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return spec.ErrNotFound.With("Unknown room")
	}
	return err
}
