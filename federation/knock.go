package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Knocks over federation ("Knocking upon a room"), both sides; the handshake of joins with other
// endpoints:
//
//	knocking server (KnockRemote)                resident server (makeKnock, sendKnock)
//	  GET /v1/make_knock/{room}/{user}?ver=... ─▶  template checked against the current state
//	                                               (join rule knock or knock_restricted)
//	  fill in, hash, sign the knock           ◀──
//	  PUT /v1/send_knock/{room}/{event}       ─▶  verify, co-sign, receive it, queue it for the
//	                                               room's other servers (its admins see it)
//	  keep the knock and the stripped state   ◀──  knock_room_state
//	  for /sync's rooms.knock
//
// An invite then accepts the knock (PUT /v2/invite, as any invite); a leave through
// make_leave/send_leave retracts it (LeaveRemote).

// makeKnock is GET /_matrix/federation/v1/make_knock/{roomId}/{userId}.
func (a *API) makeKnock(r *http.Request) (any, error) {
	vers := r.URL.Query()["ver"]
	if len(vers) == 0 {
		return nil, spec.ErrMissingParam.With("ver is required: the room versions your server supports")
	}
	return a.makeMembership(r, room.MembershipKnock, vers)
}

// sendKnock is PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}: the knock is received
// like any event and relayed to the room's other servers; the answer is the room's stripped
// state.
func (a *API) sendKnock(r *http.Request) (any, error) {
	knock, err := a.acceptMembership(r, room.MembershipKnock)
	if err != nil {
		return nil, err
	}
	state, err := a.rooms.KnockRoomState(r.Context(), knock.RoomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"knock_room_state": state}, nil
}

// KnockRemote knocks on a room this server is not in, for a local user, through the first of
// servers that answers: make_knock, then send_knock; the knock and the room's stripped state are
// then kept so that the user's /sync lists the room under rooms.knock. It returns the knock's
// event ID.
func (a *API) KnockRemote(ctx context.Context, roomID string, servers []string, userID string, profile room.MemberProfile, reason string) (string, error) {
	knock := func(srv string) (string, error) { return a.knockVia(ctx, srv, roomID, userID, profile, reason) }
	return a.tryServers(servers, roomID, "knock on the room", knock, func(err error) error {
		var se *spec.Error
		var fe *fedclient.Error
		switch {
		case errors.As(err, &se) && (se.Code == spec.ErrForbidden.Code || se.Code == ErrIncompatibleRoomVersion.Code):
			return err
		case errors.As(err, &fe) && (fe.Status == http.StatusForbidden || fe.Code == ErrIncompatibleRoomVersion.Code):
			return remoteRefusal("The room's server refused the knock", err)
		}
		return nil
	})
}

// knockVia is the knock handshake with one resident server.
func (a *API) knockVia(ctx context.Context, server, roomID, userID string, profile room.MemberProfile, reason string) (string, error) {
	v, knock, err := a.makeMembershipOn(ctx, server, "make_knock", roomID, userID, room.MembershipKnock, memberExtra(profile, reason))
	if err != nil {
		return "", err
	}
	var resp struct {
		KnockRoomState []json.RawMessage `json:"knock_room_state"`
	}
	path := "/_matrix/federation/v1/send_knock/" + url.PathEscape(roomID) + "/" + url.PathEscape(knock.EventID)
	if err := a.client.DoJSON(ctx, server, "PUT", path, json.RawMessage(knock.Raw), &resp); err != nil {
		return "", err
	}
	// Entries that are not validly signed or not of this room are left out (the spec's SHOULD);
	// bare stripped state events are kept for display in room versions 1 to 11 (strippedstate.go).
	var stripped []*event.PDU
	full, bare := a.strippedRoomState(ctx, v, resp.KnockRoomState)
	for _, p := range full {
		if p.EffectiveRoomID() == roomID {
			stripped = append(stripped, p)
		}
	}
	if err := a.rooms.RecordRemoteMembership(ctx, v, knock, stripped, bare); err != nil {
		return "", err
	}
	return knock.EventID, nil
}

// knockServers are the servers to retract a knock on roomID through: those that sent the room's
// stripped state this server keeps from the knock's answer (they were in the room then).
func (a *API) knockServers(ctx context.Context, roomID string) []string {
	servers, err := a.rooms.RemoteRoomServers(ctx, roomID)
	if err != nil {
		a.log.Warn("federation: servers of a knocked room", "room_id", roomID, "err", err)
	}
	return servers
}
