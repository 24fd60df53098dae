package room

import (
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// Join rules of m.room.join_rules.
const (
	JoinRulePublic          = "public"
	JoinRuleInvite          = "invite"
	JoinRuleKnock           = "knock"            // v7+
	JoinRuleRestricted      = "restricted"       // v8+
	JoinRuleKnockRestricted = "knock_restricted" // v10+
	JoinRulePrivate         = "private"          // reserved by the spec, with no meaning in the auth rules
)

// JoinRule is the join rule of an m.room.join_rules event. With no event (nil) the rule is
// "invite", as in Synapse and gomatrixserverlib: the spec names no default, and with none every
// join but the creator's first is rejected either way, except an invited user's.
func JoinRule(ev *event.PDU) string {
	if ev == nil {
		return JoinRuleInvite
	}
	var c struct {
		JoinRule *string `json:"join_rule"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	if c.JoinRule == nil {
		// An event without a (string) join_rule sets no known rule: no join is allowed by it.
		return ""
	}
	return *c.JoinRule
}

// AllowCondition is one entry of the allow list of a restricted join rule.
type AllowCondition struct {
	Type   string `json:"type"`    // "m.room_membership"
	RoomID string `json:"room_id"` // for m.room_membership
}

// JoinRuleAllow lists the allow conditions of a restricted or knock_restricted join rule; the
// resident server checks them before it signs a join with join_authorised_via_users_server (the
// auth rules only check that signature and the authorising user's power).
func JoinRuleAllow(ev *event.PDU) []AllowCondition {
	if ev == nil {
		return nil
	}
	var c struct {
		Allow []json.RawMessage `json:"allow"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	out := make([]AllowCondition, 0, len(c.Allow))
	for _, raw := range c.Allow {
		var a AllowCondition
		if json.Unmarshal(raw, &a) == nil && a.Type != "" {
			out = append(out, a)
		}
	}
	return out
}
