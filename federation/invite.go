package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/federation/fedclient"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Invites over federation ("Inviting to a room", v2), both sides, and the leave that rejects an
// invite to a room this server is not in ("Leaving Rooms", make_leave/send_leave, joining side):
//
//	inviting server (InviteRemote)               invited server (invite)
//	  build + sign the invite (PrepareInvite)
//	  PUT /v2/invite/{room}/{event} ───────────▶   checks, adds its signature, keeps the invite
//	  verify both signatures, receive it  ◀──────   and the room's stripped state for /sync
//	  into the room, send it to the room's servers

// invite is PUT /_matrix/federation/v2/invite/{roomId}/{eventId}.
func (a *API) invite(r *http.Request) (any, error) {
	ctx := r.Context()
	roomID, eventID, origin := chi.URLParam(r, "roomId"), chi.URLParam(r, "eventId"), Origin(ctx)
	var body struct {
		RoomVersion     string            `json:"room_version"`
		Event           json.RawMessage   `json:"event"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Event == nil || body.RoomVersion == "" {
		return nil, spec.ErrBadJSON.With("Expected {room_version, event, invite_room_state}")
	}
	v, err := event.LookupVersion(body.RoomVersion)
	if err != nil {
		return nil, ErrIncompatibleRoomVersion.WithField("room_version", body.RoomVersion)
	}
	p, err := event.Parse(v, body.Event)
	if err == nil {
		p, err = p.WithoutUnsigned()
	}
	if err != nil {
		return nil, spec.ErrInvalidParam.Withf("Invalid event: %v", err)
	}
	switch {
	case p.EventID != eventID:
		return nil, spec.ErrInvalidParam.Withf("The event's ID is %s, not %s", p.EventID, eventID)
	case p.RoomID != roomID:
		return nil, spec.ErrInvalidParam.With("The event is for another room")
	case p.Type != room.TypeMember || p.StateKey == nil || room.Membership(p) != room.MembershipInvite:
		return nil, spec.ErrInvalidParam.With("The event is not an invite")
	case serverName(p.Sender) != origin:
		return nil, spec.ErrInvalidParam.With("The sender is not on the requesting server")
	case serverName(*p.StateKey) != a.serverName:
		return nil, spec.ErrInvalidParam.With("The invited user is not on this server")
	}
	if err := event.VerifyEventSignatures(ctx, v, p, a.keys.Key); err != nil {
		return nil, spec.ErrInvalidParam.Withf("The event's signatures do not verify: %v", err)
	}
	if p.CheckContentHash() != nil {
		return nil, spec.ErrInvalidParam.With("The event's content hash does not match")
	}
	localpart, _, _ := cutServer((*p.StateKey)[1:])
	if acc, err := a.store.Read().Account(ctx, localpart); errors.Is(err, storage.ErrNotFound) || err == nil && acc.Deactivated {
		return nil, spec.ErrNotFound.With("No such user on this server")
	} else if err != nil {
		return nil, err
	}
	stripped, bare := a.strippedRoomState(ctx, v, body.InviteRoomState)
	hasCreate := false
	for _, s := range stripped {
		if s.EffectiveRoomID() != roomID {
			return nil, spec.ErrInvalidParam.With("An event of invite_room_state is in another room")
		}
		hasCreate = hasCreate || s.Type == room.TypeCreate
	}
	if !hasCreate && v.RoomIDFromCreateEvent() {
		return nil, spec.ErrInvalidParam.With("invite_room_state has no valid m.room.create event") // the spec's errcode
	}
	signed, err := a.rooms.SignPDU(p)
	if err != nil {
		return nil, err
	}
	if p, err = event.Parse(v, signed); err != nil {
		return nil, err
	}
	if err := a.rooms.RecordRemoteMembership(ctx, v, p, stripped, bare); err != nil {
		return nil, err
	}
	return map[string]json.RawMessage{"event": signed}, nil
}

// InviteRemote invites target, a user of another server, to a room of this server: the
// invitee's server signs the invite, then it is received into the room and sent to the room's
// servers. It returns the invite's event ID.
func (a *API) InviteRemote(ctx context.Context, roomID string, from room.Sender, target, reason string, isDirect bool) (string, error) {
	v, inv, state, err := a.rooms.PrepareInvite(ctx, roomID, from, target, reason, isDirect)
	if err != nil {
		return "", err
	}
	return a.sendInvite(ctx, v, inv, state)
}

// sendInvite has the invitee's server sign inv, an invite prepared against the room's current
// state, then receives it into the room and sends it to the room's servers (also used by
// exchange_third_party_invite, thirdparty.go).
func (a *API) sendInvite(ctx context.Context, v event.Version, inv *event.PDU, state []json.RawMessage) (string, error) {
	roomID, dest := inv.RoomID, serverName(*inv.StateKey)
	var resp struct {
		Event json.RawMessage `json:"event"`
	}
	body := map[string]any{"room_version": v.ID(), "event": json.RawMessage(inv.Raw), "invite_room_state": state}
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(roomID) + "/" + url.PathEscape(inv.EventID)
	if err := a.client.DoJSON(ctx, dest, "PUT", path, body, &resp); err != nil {
		return "", remoteRefusal("The invited user's server refused the invite", err)
	}
	signed, err := event.Parse(v, resp.Event)
	if err == nil {
		signed, err = signed.WithoutUnsigned()
	}
	if err != nil || signed.EventID != inv.EventID {
		return "", spec.ErrUnknown.Withf("The invited user's server answered with another event (%v)", err)
	}
	if err := event.VerifyEventSignedBy(ctx, v, signed, dest, a.keys.Key); err != nil {
		return "", spec.ErrUnknown.Withf("The invited user's server did not sign the invite: %v", err)
	}
	var except []string
	if in, err := a.rooms.ServerInRoom(ctx, roomID, dest); err != nil {
		return "", err
	} else if !in {
		except = []string{dest} // it has the invite; /send would be dropped there anyway
	}
	outs, err := a.rooms.ReceivePDUs(ctx, roomID, []room.Incoming{{PDU: signed, Relay: true, RelayExcept: except}})
	if err != nil {
		return "", err
	}
	if o := outs[0]; o.Err != nil || o.SoftFailed {
		return "", spec.ErrForbidden.Withf("The invite was refused: %v", o.Err)
	}
	return signed.EventID, nil
}

// remoteRefusal turns another server's error into one for our client: its 4xx Matrix errors
// pass through (prefixed with msg), anything else is M_UNKNOWN.
func remoteRefusal(msg string, err error) error {
	var fe *fedclient.Error
	if errors.As(err, &fe) && fe.Code != "" && fe.Status >= 400 && fe.Status < 500 {
		return &spec.Error{Code: fe.Code, Status: fe.Status, Message: msg + ": " + fe.Message}
	}
	return spec.ErrUnknown.Withf("%s: %v", msg, err)
}

// LeaveRemote rejects an invite to a room this server is not in (or retracts a knock): the
// leave is made through the inviting server with make_leave and send_leave, then kept as the
// user's membership.
func (a *API) LeaveRemote(ctx context.Context, roomID, userID, reason string) (string, error) {
	inv, err := a.rooms.RemoteMembership(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	if inv.Membership != room.MembershipInvite && inv.Membership != room.MembershipKnock {
		return "", spec.ErrForbidden.With("You are not invited to this room")
	}
	servers := []string{serverName(inv.Sender)}
	if inv.Membership == room.MembershipKnock {
		servers = append(servers, a.knockServers(ctx, roomID)...) // knock.go
	}
	if _, srv, ok := cutServer(roomID); ok {
		servers = append(servers, srv)
	}
	extra := map[string]any{}
	if reason != "" {
		extra["reason"] = reason
	}
	var errs []error
	for _, srv := range servers {
		if srv == a.serverName {
			continue
		}
		v, leave, err := a.makeMembershipOn(ctx, srv, "make_leave", roomID, userID, room.MembershipLeave, extra)
		if err == nil {
			path := "/_matrix/federation/v2/send_leave/" + url.PathEscape(roomID) + "/" + url.PathEscape(leave.EventID)
			if err = a.client.DoJSON(ctx, srv, "PUT", path, json.RawMessage(leave.Raw), &struct{}{}); err == nil {
				if err := a.rooms.RecordRemoteMembership(ctx, v, leave, nil, nil); err != nil {
					return "", err
				}
				return leave.EventID, nil
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", srv, err))
	}
	a.log.Info("federation: rejecting an invite locally, no server of the room took the leave", "room_id", roomID,
		"user_id", userID, "err", errors.Join(errs...))
	return a.leaveLocally(ctx, inv, userID, reason)
}

// leaveLocally records a leave for an invite or a knock that no server of the room took (all down,
// gone, or refusing): the user is out of the room on this server, the room's servers never learn
// of it (Synapse does the same, an "out-of-band" leave). Without it an invite from a server that
// disappeared could never be got rid of. The leave follows the invite in the graph and is signed
// by this server, but it goes nowhere.
func (a *API) leaveLocally(ctx context.Context, inv storage.Event, userID, reason string) (string, error) {
	v := a.outOfBandVersion(ctx, inv.RoomID)
	content := map[string]any{"membership": room.MembershipLeave}
	if reason != "" {
		content["reason"] = reason
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return "", err
	}
	p, err := event.Build(v, event.Proto{RoomID: inv.RoomID, Sender: userID, Type: room.TypeMember, StateKey: &userID, Content: raw,
		PrevEvents: []string{inv.EventID}, AuthEvents: []string{inv.EventID}, Depth: inv.Depth + 1,
		OriginServerTS: time.Now().UnixMilli()}, a.serverName, a.key.ID, a.key.Private)
	if err != nil {
		return "", err
	}
	if err := a.rooms.RecordRemoteMembership(ctx, v, p, nil, nil); err != nil {
		return "", err
	}
	return p.EventID, nil
}

// outOfBandVersion is the room version of a room this server is not in, from the m.room.create
// event of the invite's stripped state when it came with one (the default room version
// otherwise: the event it is used for is never sent).
func (a *API) outOfBandVersion(ctx context.Context, roomID string) event.Version {
	c := a.store.Read()
	if id, err := c.CurrentStateEvent(ctx, roomID, "m.room.create", ""); err == nil {
		if evs, err := c.Events(ctx, []string{id}); err == nil && len(evs) == 1 {
			var create struct {
				Content struct {
					RoomVersion string `json:"room_version"`
				} `json:"content"`
			}
			if json.Unmarshal(evs[0].ClientJSON, &create) == nil {
				if v, err := event.LookupVersion(create.Content.RoomVersion); err == nil {
					return v
				}
			}
		}
	}
	return a.rooms.DefaultVersion()
}
