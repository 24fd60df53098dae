package room

import (
	"context"
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Invites made from third-party invites (server-server API, "Third-party invites"): once an
// identity server has bound the invited address to a Matrix user, it hands that user's server a
// "signed" object (mxid, token, the identity server's signatures). The invite that follows
// carries it in content.third_party_invite, and the auth rules (rule 4.4.1, auth_thirdparty.go)
// allow it when the signature verifies with a public key of the room's m.room.third_party_invite
// whose state key is the token, and the invite's sender is that event's sender.
//
//	server in the room:     AppendThirdPartyInvite sends the invite itself (PUT /3pid/onbind).
//	server not in the room: it asks a resident (PUT /exchange_third_party_invite), which
//	                        PrepareThirdPartyInvite builds the invite for, then sends it to the
//	                        invited user's server like any invite.

// thirdPartyInviteProto is the invite of target by sender made from signed: display_name is
// the one of the room's m.room.third_party_invite with signed's token, the only one that counts.
func thirdPartyInviteProto(rs *roomState, sender, target string, signed json.RawMessage) (event.Proto, error) {
	var s struct {
		MXID  string `json:"mxid"`
		Token string `json:"token"`
	}
	if json.Unmarshal(signed, &s) != nil || s.Token == "" || s.MXID == "" {
		return event.Proto{}, spec.ErrInvalidParam.With("signed must be an object with mxid, token and signatures")
	}
	if s.MXID != target {
		return event.Proto{}, spec.ErrInvalidParam.With("signed.mxid is not the invited user")
	}
	tpi := rs.state[StateKeyTuple{TypeThirdPartyInvite, s.Token}]
	if tpi == nil {
		return event.Proto{}, spec.ErrForbidden.With("The room has no third-party invite with this token")
	}
	var c struct {
		DisplayName string `json:"display_name"`
	}
	_ = json.Unmarshal(tpi.Content, &c)
	content := map[string]any{"membership": MembershipInvite,
		"third_party_invite": map[string]any{"display_name": c.DisplayName, "signed": signed}}
	return event.Proto{Sender: sender, Type: TypeMember, StateKey: &target, Content: mustJSON(content)}, nil
}

// PrepareThirdPartyInvite builds the invite of target (a user of another server) by sender (the
// sender of the room's m.room.third_party_invite, a user of this server) made from signed,
// authorised against the current state and signed by this server, without storing it, for
// exchange_third_party_invite. It returns it with the room's stripped state, as PrepareInvite.
func (s *Service) PrepareThirdPartyInvite(ctx context.Context, roomID, sender, target string, signed json.RawMessage) (event.Version, *event.PDU, []json.RawMessage, error) {
	return s.prepareRemoteInvite(ctx, roomID, sender, func(rs *roomState) (event.Proto, error) {
		return thirdPartyInviteProto(rs, sender, target, signed)
	})
}

// AppendThirdPartyInvite sends the invite of target (a user of this server) by sender made from
// signed, in a room this server is in, like any event of this server. sender may be a user of
// another server: such an invite needs no signature of the sender's server. It returns the
// invite's event ID.
func (s *Service) AppendThirdPartyInvite(ctx context.Context, roomID, sender, target string, signed json.RawMessage) (string, error) {
	var id string
	err := s.write(ctx, func(t *txn) error {
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		proto, err := thirdPartyInviteProto(rs, sender, target, signed)
		if err != nil {
			return err
		}
		pdu, err := t.append(rs, proto, appendOpts{})
		if err != nil {
			return err
		}
		id = pdu.EventID
		return nil
	})
	return id, err
}
