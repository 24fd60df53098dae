package room

import (
	"context"
	"errors"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Join rules with allow conditions.
const (
	joinRuleRestricted      = "restricted"
	joinRuleKnockRestricted = "knock_restricted"
)

// Join joins a room of this server. In a restricted (or knock_restricted) room a user without an
// invite may join if they are joined to one of the rooms the join rule allows; the join then
// names a local member with invite power in join_authorised_via_users_server, as the auth rules
// require.
func (s *Service) Join(ctx context.Context, roomID string, from Sender, profile MemberProfile, reason string) (string, error) {
	var id string
	err := s.write(ctx, func(t *txn) error {
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		content := newMemberContent(MembershipJoin, profile, false)
		if reason != "" {
			content["reason"] = reason
		}
		if via, err := t.restrictedJoinAuthoriser(rs, from.UserID); err != nil {
			return err
		} else if via != "" {
			content["join_authorised_via_users_server"] = via
		}
		target := from.UserID
		pdu, err := t.append(rs, event.Proto{Sender: from.UserID, Type: TypeMember, StateKey: &target, Content: mustJSON(content)}, appendOpts{})
		if err != nil {
			return err
		}
		id = pdu.EventID
		return nil
	})
	return id, err
}

// restrictedJoinAuthoriser returns the local user that authorises user's join of a restricted
// room, or "" when the join needs no authoriser (not restricted, or already invited or joined).
func (t *txn) restrictedJoinAuthoriser(rs *roomState, user string) (string, error) {
	jr := rs.state[StateKeyTuple{TypeJoinRules, ""}]
	rule := JoinRule(jr)
	if rule != joinRuleRestricted && rule != joinRuleKnockRestricted || !rs.version.RestrictedJoins() {
		return "", nil
	}
	if m := rs.state[StateKeyTuple{TypeMember, user}]; m != nil {
		if ms := Membership(m); ms == MembershipInvite || ms == MembershipJoin {
			return "", nil
		}
	}
	allowed := false
	for _, cond := range JoinRuleAllow(jr) {
		if cond.Type != "m.room_membership" || cond.RoomID == "" {
			continue
		}
		id, err := t.c.CurrentStateEvent(t.ctx, cond.RoomID, TypeMember, user)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		e, err := t.c.Event(t.ctx, id)
		if err != nil {
			return "", err
		}
		if e.Membership == MembershipJoin {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", spec.ErrForbidden.With("You are not a member of any room this room's join rule allows")
	}
	pl, err := NewPowerLevels(rs.version, rs.state[StateKeyTuple{TypeCreate, ""}], rs.state[StateKeyTuple{TypePowerLevels, ""}])
	if err != nil {
		return "", err
	}
	suffix := ":" + t.s.opts.ServerName
	for k, ev := range rs.state {
		if k.Type == TypeMember && strings.HasSuffix(k.StateKey, suffix) && Membership(ev) == MembershipJoin &&
			pl.UserLevel(k.StateKey) >= pl.Invite {
			return k.StateKey, nil
		}
	}
	return "", spec.ErrForbidden.With("No user of this server can authorise your join")
}

// UpdateProfile sends a new join event with the user's current displayname and avatar into every
// room they are joined to, as clients expect after a profile change. Rooms where the change is
// refused are skipped.
func (s *Service) UpdateProfile(ctx context.Context, from Sender, profile MemberProfile) error {
	rooms, err := s.JoinedRooms(ctx, from.UserID)
	if err != nil {
		return err
	}
	for _, roomID := range rooms {
		_, err := s.Membership(ctx, roomID, from, from.UserID, MembershipJoin, "", profile, false)
		if err != nil && !errors.Is(err, spec.ErrForbidden) {
			return err
		}
	}
	return nil
}
