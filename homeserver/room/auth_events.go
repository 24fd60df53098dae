package room

import (
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// AuthEventsNeeded is the auth events selection algorithm (server-server API, "Auth events
// selection"): the state keys whose current events belong in ev's auth_events. The create event
// is included where the room version cites it (before v12). An m.room.create event needs none.
func AuthEventsNeeded(v event.Version, ev *event.PDU) []StateKeyTuple {
	if ev.Type == TypeCreate {
		return nil
	}
	keys := make([]StateKeyTuple, 0, 6)
	add := func(k StateKeyTuple) {
		for _, have := range keys {
			if have == k {
				return
			}
		}
		keys = append(keys, k)
	}
	if v.CreateEventInAuthEvents() {
		add(StateKeyTuple{TypeCreate, ""})
	}
	add(StateKeyTuple{TypePowerLevels, ""})
	add(StateKeyTuple{TypeMember, ev.Sender})
	if ev.Type != TypeMember || ev.StateKey == nil {
		return keys
	}
	add(StateKeyTuple{TypeMember, *ev.StateKey})
	mc := parseMemberContent(ev.Content)
	if mc.Membership == nil {
		return keys
	}
	switch *mc.Membership {
	case MembershipJoin, MembershipInvite, MembershipKnock:
		add(StateKeyTuple{TypeJoinRules, ""})
	}
	if *mc.Membership == MembershipInvite && mc.ThirdPartyInvite != nil {
		var tpi struct {
			Signed struct {
				Token *string `json:"token"`
			} `json:"signed"`
		}
		if json.Unmarshal(mc.ThirdPartyInvite, &tpi) == nil && tpi.Signed.Token != nil {
			add(StateKeyTuple{TypeThirdPartyInvite, *tpi.Signed.Token})
		}
	}
	if *mc.Membership == MembershipJoin && v.RestrictedJoins() && mc.JoinAuthorisedVia != nil {
		var via string
		if json.Unmarshal(mc.JoinAuthorisedVia, &via) == nil && via != "" {
			add(StateKeyTuple{TypeMember, via})
		}
	}
	return keys
}

// CheckAuthEvents applies the rules about an event's auth_events list (rule 2; v12: rule 3):
// no two entries for one (type, state_key), no entry the auth events selection would not pick
// (in v12 that includes the create event), a create event among them (before v12), and every
// entry in the event's room. authEvents are the events ev.AuthEvents names. Rule 2.3 (no entry
// rejected on receipt) needs the rejection record, so it is the caller's. An m.room.create event
// is governed by rule 1 alone and passes.
func CheckAuthEvents(v event.Version, ev *event.PDU, authEvents []*event.PDU) error {
	if ev.Type == TypeCreate {
		return nil
	}
	r := numberingOf(v).authEvents
	seen := make(map[StateKeyTuple]bool, len(authEvents))
	for _, ae := range authEvents {
		if ae == nil || ae.StateKey == nil {
			continue
		}
		k := StateKeyTuple{ae.Type, *ae.StateKey}
		if seen[k] {
			return reject(r+".1", "auth_events has two entries for %v", k)
		}
		seen[k] = true
	}
	needed := AuthEventsNeeded(v, ev)
	for _, ae := range authEvents {
		if ae == nil {
			continue
		}
		if ae.StateKey == nil {
			return reject(r+".2", "auth event %s is not a state event", ae.EventID)
		}
		k := StateKeyTuple{ae.Type, *ae.StateKey}
		ok := false
		for _, want := range needed {
			if want == k {
				ok = true
				break
			}
		}
		if !ok {
			return reject(r+".2", "auth event %s %v is not one the auth events selection picks", ae.EventID, k)
		}
	}
	if v.CreateEventInAuthEvents() && !seen[StateKeyTuple{TypeCreate, ""}] {
		return reject(r+".4", "auth_events has no m.room.create event")
	}
	for _, ae := range authEvents {
		if ae != nil && ae.RoomID != ev.RoomID {
			return reject(r+".5", "auth event %s is in room %q, not %q", ae.EventID, ae.RoomID, ev.RoomID)
		}
	}
	return nil
}
