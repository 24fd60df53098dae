package room

import (
	"context"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Knock is POST /knock/{roomIdOrAlias} for a room this server knows: a knock membership event,
// allowed when the room version has knocking and the join rule is knock (or knock_restricted from
// v10). The auth rules refuse knocks of banned, invited and joined users.
func (s *Service) Knock(ctx context.Context, roomID string, from Sender, reason string, profile MemberProfile) error {
	content := newMemberContent(MembershipKnock, profile, false)
	if reason != "" {
		content["reason"] = reason
	}
	return s.write(ctx, func(t *txn) error {
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		if !rs.version.Knocking() {
			return spec.ErrForbidden.Withf("Room version %s does not support knocking", rs.version.ID())
		}
		rule := JoinRule(rs.state[StateKeyTuple{TypeJoinRules, ""}])
		if rule != JoinRuleKnock && !(rule == JoinRuleKnockRestricted && rs.version.KnockRestricted()) {
			return spec.ErrForbidden.With("You are not allowed to knock on this room: its join rule does not allow knocking")
		}
		_, err = t.append(rs, event.Proto{Sender: from.UserID, Type: TypeMember, StateKey: stateKeyPtr(from.UserID), Content: mustJSON(content)}, appendOpts{})
		return err
	})
}
