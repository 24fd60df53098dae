package room

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Membership handshakes with other servers (server-server API, "Joining Rooms", "Leaving Rooms"):
//
//	resident side:  MakeMembership (make_join, make_leave) builds the template of the event;
//	                the joining server signs it and sends it back (send_join, send_leave), which
//	                federation/ hands to ReceivePDUs with Relay, then answers with StateAt.
//	joining side:   federation/join.go asks a resident, verifies the answer, and CompleteRemoteJoin
//	                stores the room's state, its auth chain and the join in one transaction.

// ErrIncompatibleRoomVersion is M_INCOMPATIBLE_ROOM_VERSION: the joining server does not support
// the room's version.
var ErrIncompatibleRoomVersion = &spec.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Status: http.StatusBadRequest,
	Message: "Your homeserver does not support the version of this room"}

// MakeMembership builds the template of a membership event (join or leave) of userID, a user of
// another server, for /make_join or /make_leave: prev_events, auth_events and depth filled in
// from the current state, checked against the auth rules now so that a refusal comes early.
// versions are the room versions the joining server supports (nil: any, for leaves).
func (s *Service) MakeMembership(ctx context.Context, roomID, userID, membership string, versions []string) (event.Version, json.RawMessage, error) {
	var v event.Version
	var template json.RawMessage
	err := s.write(ctx, func(t *txn) error {
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		v = rs.version
		if versions != nil && !slices.Contains(versions, v.ID()) {
			return ErrIncompatibleRoomVersion.WithField("room_version", v.ID())
		}
		content := map[string]any{"membership": membership}
		if membership == MembershipJoin {
			via, err := t.restrictedJoinAuthoriser(rs, userID)
			if err != nil {
				return err
			}
			if via != "" {
				content["join_authorised_via_users_server"] = via
			}
		}
		proto := event.Proto{RoomID: rs.roomID, Sender: userID, Type: TypeMember, StateKey: &userID, Content: mustJSON(content),
			PrevEvents: rs.extremities, Depth: rs.depth + 1, OriginServerTS: s.nowMS()}
		if len(proto.PrevEvents) > maxPrevEvents {
			proto.PrevEvents = proto.PrevEvents[:maxPrevEvents]
		}
		draft := &event.PDU{Type: proto.Type, StateKey: proto.StateKey, Sender: proto.Sender, Content: proto.Content, Version: v}
		for _, k := range AuthEventsNeeded(v, draft) {
			if ev := rs.state[k]; ev != nil {
				proto.AuthEvents = append(proto.AuthEvents, ev.EventID)
			}
		}
		pdu, err := event.BuildUnsigned(v, proto, s.opts.ServerName, s.opts.Key.ID)
		if err != nil {
			return spec.ErrBadJSON.With(err.Error())
		}
		if content["join_authorised_via_users_server"] != nil {
			// The check below wants the authorising server's signature (rule 4.2), which
			// send_join adds: sign the draft as it will be, or every restricted join of a
			// user of another server is refused here (found federating with Synapse).
			signed, err := s.SignPDU(pdu)
			if err != nil {
				return err
			}
			if pdu, err = event.Parse(v, signed); err != nil {
				return err
			}
		}
		if err := t.s.checker(v).Allowed(pdu, rs.lookup()); err != nil {
			var ae *AuthError
			if errors.As(err, &ae) {
				return spec.ErrForbidden.With(ae.Reason)
			}
			return err
		}
		template = mustJSON(map[string]any{
			"type": TypeMember, "room_id": rs.roomID, "sender": userID, "state_key": userID,
			"content": json.RawMessage(proto.Content), "prev_events": proto.PrevEvents, "auth_events": append([]string{}, proto.AuthEvents...),
			"depth": proto.Depth, "origin": serverOf(userID), "origin_server_ts": proto.OriginServerTS,
		})
		return nil
	})
	return v, template, err
}

// CompleteRemoteJoin stores what a resident server answered to send_join, in one transaction:
// the auth chain and the state before the join (as outliers, each checked against its own auth
// events), then the join itself with that state. The room becomes known here if it was not (its
// current state is then the state after the join). Events must have had their signatures and
// hashes checked. A join that fails the auth rules leaves nothing behind.
func (s *Service) CompleteRemoteJoin(ctx context.Context, v event.Version, roomID string, state, authChain []*event.PDU, join *event.PDU) error {
	return s.write(ctx, func(t *txn) error {
		var create *event.PDU
		for _, p := range state {
			if p.Type == TypeCreate && p.StateKey != nil && *p.StateKey == "" {
				create = p
			}
		}
		if create == nil {
			return spec.ErrBadJSON.With("The room state has no m.room.create event")
		}
		if _, err := t.c.Room(t.ctx, roomID); errors.Is(err, storage.ErrNotFound) {
			if err := t.c.InsertRoom(t.ctx, storage.Room{RoomID: roomID, Version: v.ID(), Creator: create.Sender, CreatedTS: s.nowMS()}); err != nil {
				return err
			}
			// What an invite left there (RecordRemoteMembership) gives way to the room's state.
			if err := t.c.ClearCurrentState(t.ctx, roomID); err != nil {
				return err
			}
			t.rooms[roomID] = &roomState{roomID: roomID, version: v, state: map[StateKeyTuple]*event.PDU{}}
		} else if err != nil {
			return err
		}
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		outs, err := t.storeOutliers(roomID, v, append(slices.Clone(authChain), state...))
		if err != nil {
			return err
		}
		bad := map[string]bool{}
		for _, o := range outs {
			if o.Err != nil {
				bad[o.EventID] = true
			}
		}
		before := storage.StateMap{}
		for _, p := range state {
			if p.StateKey != nil && !bad[p.EventID] {
				before[storage.StateKey{Type: p.Type, StateKey: *p.StateKey}] = p.EventID
			}
		}
		o, err := t.receive(rs, Incoming{PDU: join, StateBefore: before})
		if err != nil {
			return err
		}
		if o.Err != nil {
			return spec.ErrForbidden.Withf("The join was refused: %v", o.Err)
		}
		if o.SoftFailed {
			return spec.ErrForbidden.With("The join does not pass the room's current state")
		}
		return nil
	})
}

// KnownRoom reports whether this server has the room (it is or was in it).
func (s *Service) KnownRoom(ctx context.Context, roomID string) (bool, error) {
	_, err := s.store.Read().Room(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
