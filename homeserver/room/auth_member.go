package room

import (
	"encoding/json"
	"errors"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// Membership values of m.room.member.
const (
	MembershipJoin   = "join"
	MembershipInvite = "invite"
	MembershipLeave  = "leave"
	MembershipBan    = "ban"
	MembershipKnock  = "knock"
)

// memberContent is the part of m.room.member content the auth rules read.
type memberContent struct {
	Membership        *string         `json:"-"`
	RawMembership     json.RawMessage `json:"membership"`
	ThirdPartyInvite  json.RawMessage `json:"third_party_invite"`
	JoinAuthorisedVia json.RawMessage `json:"join_authorised_via_users_server"`
}

func parseMemberContent(raw json.RawMessage) memberContent {
	var mc memberContent
	_ = json.Unmarshal(raw, &mc)
	var m string
	if mc.RawMembership != nil && json.Unmarshal(mc.RawMembership, &m) == nil && string(mc.RawMembership) != "null" {
		mc.Membership = &m
	}
	return mc
}

// Membership is the membership in an m.room.member event's content ("" if missing or not a
// string, or ev is nil).
func Membership(ev *event.PDU) string {
	if ev == nil {
		return ""
	}
	if mc := parseMemberContent(ev.Content); mc.Membership != nil {
		return *mc.Membership
	}
	return ""
}

// membershipIn is user's current membership in state ("" if none), cached by event ID.
func (c *Checker) membershipIn(state StateLookup, user string) string {
	ev := state(TypeMember, user)
	if ev == nil {
		return ""
	}
	if m, ok := c.members[ev.EventID]; ok && ev.EventID != "" {
		return m
	}
	m := Membership(ev)
	cache(&c.members, ev.EventID, m)
	return m
}

// joinRuleIn is the join rule in state, cached by event ID.
func (c *Checker) joinRuleIn(state StateLookup) string {
	ev := state(TypeJoinRules, "")
	if ev == nil || ev.EventID == "" {
		return JoinRule(ev)
	}
	if r, ok := c.joinRules[ev.EventID]; ok {
		return r
	}
	r := JoinRule(ev)
	cache(&c.joinRules, ev.EventID, r)
	return r
}

// checkMember is rule 4 (v12: 5).
func (c *Checker) checkMember(ev *event.PDU, state StateLookup, create *event.PDU, ci *creatorInfo) error {
	n := c.n
	mc := parseMemberContent(ev.Content)
	if ev.StateKey == nil {
		return reject(n.member+".1", "m.room.member has no state_key")
	}
	if mc.Membership == nil {
		return reject(n.member+".1", "m.room.member content has no membership string")
	}
	target, membership := *ev.StateKey, *mc.Membership

	// 4.2 (v8+): join_authorised_via_users_server must be vouched for by a signature of that
	// user's server.
	if c.v.RestrictedJoins() && mc.JoinAuthorisedVia != nil {
		var via string
		if json.Unmarshal(mc.JoinAuthorisedVia, &via) != nil {
			return reject(n.mAuthorisedVia+".1", "join_authorised_via_users_server is not a string")
		}
		server := serverOf(via)
		if server == "" {
			return reject(n.mAuthorisedVia+".1", "join_authorised_via_users_server %q is not a user ID", via)
		}
		if err := c.verifySignedBy(ev, server); err != nil {
			return &AuthError{Rule: n.mAuthorisedVia + ".1", Reason: "not signed by " + server + ", the server of join_authorised_via_users_server", Err: err}
		}
	}

	pl := c.powerLevelsFrom(state, ci)
	senderMembership := c.membershipIn(state, ev.Sender)
	targetMembership := senderMembership
	if target != ev.Sender {
		targetMembership = c.membershipIn(state, target)
	}
	senderLevel := pl.UserLevel(ev.Sender)
	targetLevel := pl.UserLevel(target)

	switch membership {
	case MembershipJoin:
		return c.checkJoin(ev, state, create, ci, mc, pl, target, targetMembership)

	case MembershipInvite:
		r := n.mInvite
		if mc.ThirdPartyInvite != nil {
			if targetMembership == MembershipBan {
				return reject(r+".1.1", "target %s is banned", target)
			}
			return c.checkThirdPartyInvite(ev, state, mc.ThirdPartyInvite, target, r+".1")
		}
		if senderMembership != MembershipJoin {
			return reject(r+".2", "sender %s is not joined (membership %q)", ev.Sender, senderMembership)
		}
		if targetMembership == MembershipJoin || targetMembership == MembershipBan {
			return reject(r+".3", "target %s is already %sed", target, targetMembershipVerb(targetMembership))
		}
		if senderLevel >= pl.Invite {
			return nil
		}
		return reject(r+".5", "sender's power level %s is below the invite level %d", levelString(senderLevel), pl.Invite)

	case MembershipLeave:
		r := n.mLeave
		if ev.Sender == target {
			switch targetMembership {
			case MembershipInvite, MembershipJoin:
				return nil
			case MembershipKnock:
				if c.v.Knocking() {
					return nil
				}
			}
			return reject(r+".1", "%s cannot leave with membership %q", target, targetMembership)
		}
		if senderMembership != MembershipJoin {
			return reject(r+".2", "sender %s is not joined (membership %q)", ev.Sender, senderMembership)
		}
		if targetMembership == MembershipBan && senderLevel < pl.Ban {
			return reject(r+".3", "target is banned and sender's power level %s is below the ban level %d", levelString(senderLevel), pl.Ban)
		}
		if senderLevel >= pl.Kick && targetLevel < senderLevel {
			return nil
		}
		return reject(r+".5", "sender's power level %s does not allow kicking %s (kick level %d, target level %s)",
			levelString(senderLevel), target, pl.Kick, levelString(targetLevel))

	case MembershipBan:
		r := n.mBan
		if senderMembership != MembershipJoin {
			return reject(r+".1", "sender %s is not joined (membership %q)", ev.Sender, senderMembership)
		}
		if senderLevel >= pl.Ban && targetLevel < senderLevel {
			return nil
		}
		return reject(r+".3", "sender's power level %s does not allow banning %s (ban level %d, target level %s)",
			levelString(senderLevel), target, pl.Ban, levelString(targetLevel))

	case MembershipKnock:
		if !c.v.Knocking() {
			break
		}
		r := n.mKnock
		rule := c.joinRuleIn(state)
		if rule != JoinRuleKnock && !(c.v.KnockRestricted() && rule == JoinRuleKnockRestricted) {
			return reject(r+".1", "join rule %q does not allow knocking", rule)
		}
		if ev.Sender != target {
			return reject(r+".2", "sender %s does not match state_key %s", ev.Sender, target)
		}
		switch senderMembership {
		case MembershipBan, MembershipInvite, MembershipJoin:
			return reject(r+".4", "%s cannot knock with membership %q", target, senderMembership)
		}
		return nil
	}
	return reject(n.mUnknown, "unknown membership %q", membership)
}

func targetMembershipVerb(m string) string {
	if m == MembershipBan {
		return "bann"
	}
	return "join"
}

// checkJoin is rule 4.3 (4.2 before v8).
func (c *Checker) checkJoin(ev *event.PDU, state StateLookup, create *event.PDU, ci *creatorInfo, mc memberContent, pl *PowerLevels, target, membership string) error {
	n := c.n
	r := n.mJoin
	// The creator's own first join, straight after the create event.
	if len(ev.PrevEvents) == 1 && ev.PrevEvents[0] == create.EventID && target == ci.creator {
		return nil
	}
	if ev.Sender != target {
		return reject(r+".2", "sender %s does not match state_key %s", ev.Sender, target)
	}
	if membership == MembershipBan {
		return reject(r+".3", "%s is banned", target)
	}
	rule := c.joinRuleIn(state)
	switch {
	case rule == JoinRuleInvite || (c.v.Knocking() && rule == JoinRuleKnock):
		if membership == MembershipInvite || membership == MembershipJoin {
			return nil
		}
		return reject(n.joinOtherwise, "join rule is %q and %s is not invited", rule, target)

	case c.v.RestrictedJoins() && (rule == JoinRuleRestricted || (c.v.KnockRestricted() && rule == JoinRuleKnockRestricted)):
		if membership == MembershipInvite || membership == MembershipJoin {
			return nil
		}
		var via string
		if mc.JoinAuthorisedVia == nil || json.Unmarshal(mc.JoinAuthorisedVia, &via) != nil {
			return reject(r+".5.2", "join rule is %q and the join has no join_authorised_via_users_server", rule)
		}
		if m := c.membershipIn(state, via); m != MembershipJoin {
			return reject(r+".5.2", "join_authorised_via_users_server %s is not joined (membership %q)", via, m)
		}
		if l := pl.UserLevel(via); l < pl.Invite {
			return reject(r+".5.2", "join_authorised_via_users_server %s has power level %s, below the invite level %d", via, levelString(l), pl.Invite)
		}
		return nil

	case rule == JoinRulePublic:
		return nil
	}
	return reject(n.joinOtherwise, "join rule %q does not let %s join", rule, target)
}

// verifySignedBy is the signature part of rule 4.2.1.
func (c *Checker) verifySignedBy(ev *event.PDU, server string) error {
	if c.verifyVia != nil {
		return c.verifyVia(ev, server)
	}
	if len(ev.Signatures[server]) == 0 {
		return errors.New("no signature from " + server)
	}
	return nil
}
