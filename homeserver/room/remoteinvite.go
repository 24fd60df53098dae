package room

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Invites over federation ("Inviting to a room"):
//
//	inviting server: PrepareInvite builds and signs the invite against the current state without
//	                 storing it; federation/invite.go has the invitee's server sign it too
//	                 (PUT /v2/invite) and hands the doubly signed event to ReceivePDUs with Relay.
//	invited server:  RecordRemoteMembership keeps the invite of a room it is not in, with the
//	                 room's stripped state, so that the user sees it in /sync (and the leave that
//	                 rejects it, through make_leave/send_leave).

// strippedStateTypes are the state events sent with an invite so that the invitee can tell the
// room (the spec's recommended stripped state), besides the inviter's membership.
var strippedStateTypes = []string{TypeCreate, TypeJoinRules, "m.room.name", "m.room.avatar", "m.room.topic",
	"m.room.canonical_alias", "m.room.encryption"}

// PrepareInvite builds an invite of target (a user of another server) by from, authorised
// against the current state and signed by this server, without storing it, and returns it with
// the room's stripped state (full events, as invite_room_state asks from v1.16).
func (s *Service) PrepareInvite(ctx context.Context, roomID string, from Sender, target, reason string, isDirect bool) (event.Version, *event.PDU, []json.RawMessage, error) {
	return s.prepareRemoteInvite(ctx, roomID, from.UserID, func(*roomState) (event.Proto, error) {
		content := newMemberContent(MembershipInvite, MemberProfile{}, isDirect)
		if reason != "" {
			content["reason"] = reason
		}
		return event.Proto{Sender: from.UserID, Type: TypeMember, StateKey: &target, Content: mustJSON(content)}, nil
	})
}

// prepareRemoteInvite builds the invite that proto makes from roomID's state, authorised against
// the current state and signed by this server, without storing it, and returns it with the
// room's stripped state and the membership of inviter (full events).
func (s *Service) prepareRemoteInvite(ctx context.Context, roomID, inviter string, proto func(rs *roomState) (event.Proto, error)) (event.Version, *event.PDU, []json.RawMessage, error) {
	var v event.Version
	var pdu *event.PDU
	var state []json.RawMessage
	err := s.write(ctx, func(t *txn) error {
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		v = rs.version
		p, err := proto(rs)
		if err != nil {
			return err
		}
		if pdu, err = t.prepare(rs, p); err != nil {
			return err
		}
		state = state[:0]
		for _, typ := range strippedStateTypes {
			if ev := rs.state[StateKeyTuple{typ, ""}]; ev != nil {
				state = append(state, ev.Raw)
			}
		}
		if ev := rs.state[StateKeyTuple{TypeMember, inviter}]; ev != nil {
			state = append(state, ev.Raw)
		}
		return nil
	})
	return v, pdu, state, err
}

// RecordRemoteMembership keeps an invite (or the leave rejecting it) of a local user to a room
// this server is not in. The event gets a stream position and becomes the user's current
// membership, so that /sync shows the invite (or the leave); stripped, the room's state events
// that came with an invite, are stored (outside the timeline) and become the room's known state,
// so that the invite shows the room's name. They are checked for signatures but cannot be
// authorised before a join brings their auth chain; bare, the entries that were stripped state
// events rather than full events (room versions 1 to 11), are kept the same way but only for
// display (StrippedEvent). In a room this server is in, the event is only stored as an outlier:
// it also arrives through /send, where it is processed in full.
func (s *Service) RecordRemoteMembership(ctx context.Context, v event.Version, ev *event.PDU, stripped []*event.PDU, bare []StrippedEvent) error {
	roomID := ev.RoomID
	var rows []storage.Event
	for _, p := range stripped {
		if p.StateKey == nil || *p.StateKey != "" || !slices.Contains(strippedStateTypes, p.Type) || p.EffectiveRoomID() != roomID {
			continue
		}
		rows = append(rows, storage.Event{EventID: p.EventID, RoomID: roomID, Type: p.Type, StateKey: p.StateKey,
			Sender: p.Sender, Depth: p.Depth, OriginServerTS: p.OriginServerTS, Outlier: true,
			PDU: p.Raw, ClientJSON: p.ClientJSON(nil)})
	}
	for _, b := range bare {
		if b.StateKey != "" || !slices.Contains(strippedStateTypes, b.Type) {
			continue
		}
		row, err := b.storageEvent(roomID)
		if err != nil {
			return err
		}
		rows = append(rows, row)
	}
	return s.write(ctx, func(t *txn) error {
		if _, err := t.c.Room(t.ctx, roomID); err == nil {
			_, err := t.storeOutliers(roomID, v, []*event.PDU{ev})
			return err
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		ids := make([]string, 0, len(rows)+1)
		for _, r := range rows {
			ids = append(ids, r.EventID)
		}
		metas, err := t.c.EventMetas(t.ctx, append(ids, ev.EventID))
		if err != nil {
			return err
		}
		if _, ok := metas[ev.EventID]; ok {
			return nil // a repeat
		}
		pos := t.pos.take()
		for _, r := range rows {
			if _, ok := metas[r.EventID]; !ok {
				if err := t.c.InsertEvent(t.ctx, r); err != nil {
					return err
				}
				metas[r.EventID] = storage.EventMeta{EventID: r.EventID, Outlier: true}
			}
			if err := t.c.SetCurrentState(t.ctx, roomID, storage.StateKey{Type: r.Type}, r.EventID, "", pos); err != nil {
				return err
			}
		}
		membership := Membership(ev)
		if err := t.c.InsertEvent(t.ctx, storage.Event{EventID: ev.EventID, RoomID: roomID, Type: ev.Type, StateKey: ev.StateKey,
			Sender: ev.Sender, Depth: ev.Depth, OriginServerTS: ev.OriginServerTS, StreamPos: pos, Membership: membership,
			PDU: ev.Raw, ClientJSON: ev.ClientJSON(nil)}); err != nil {
			return err
		}
		if err := t.c.SetCurrentState(t.ctx, roomID, storage.StateKey{Type: TypeMember, StateKey: *ev.StateKey}, ev.EventID, membership, pos); err != nil {
			return err
		}
		t.notices = append(t.notices, notice{RoomID: roomID, Pos: pos})
		return nil
	})
}

// RemoteMembership is a local user's membership event in a room this server is not in (an
// invite received over federation), or M_NOT_FOUND.
func (s *Service) RemoteMembership(ctx context.Context, roomID, userID string) (storage.Event, error) {
	c := s.store.Read()
	if _, err := c.Room(ctx, roomID); err == nil {
		return storage.Event{}, spec.ErrNotFound.With("This server is in the room")
	}
	id, err := c.CurrentStateEvent(ctx, roomID, TypeMember, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Event{}, spec.ErrNotFound.With("No invite to this room")
	}
	if err != nil {
		return storage.Event{}, err
	}
	return c.Event(ctx, id)
}
