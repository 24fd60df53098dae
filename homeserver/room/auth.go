// Package room holds the rules of a Matrix room: the authorisation rules of room versions 6 to 12
// (auth*.go), power levels and join rules, and (in stateres/) state resolution v2 and v2.1.
package room

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Event types the authorisation rules look at.
const (
	TypeCreate           = "m.room.create"
	TypeMember           = "m.room.member"
	TypeJoinRules        = "m.room.join_rules"
	TypePowerLevels      = "m.room.power_levels"
	TypeThirdPartyInvite = "m.room.third_party_invite"
	TypeRedaction        = "m.room.redaction"
)

// StateKeyTuple is the key of a room state entry: (event type, state key).
type StateKeyTuple struct {
	Type     string
	StateKey string
}

func (k StateKeyTuple) String() string { return "(" + k.Type + ", " + k.StateKey + ")" }

// StateLookup returns the state event for (type, state key) in the state the auth rules are
// evaluated against, or nil if there is none. The rules only ask for the keys that
// AuthEventsNeeded returns (plus the create event in room versions that do not cite it).
type StateLookup func(typ, stateKey string) *event.PDU

// StateFromEvents is a StateLookup over a list of state events (for example an event's auth
// events). Later events win over earlier ones with the same key.
func StateFromEvents(events []*event.PDU) StateLookup {
	m := make(map[StateKeyTuple]*event.PDU, len(events))
	for _, ev := range events {
		if ev != nil && ev.StateKey != nil {
			m[StateKeyTuple{ev.Type, *ev.StateKey}] = ev
		}
	}
	return StateFromMap(m)
}

// StateFromMap is a StateLookup over a map of state events.
func StateFromMap(m map[StateKeyTuple]*event.PDU) StateLookup {
	return func(typ, stateKey string) *event.PDU { return m[StateKeyTuple{typ, stateKey}] }
}

// AuthError is an event rejected by the authorisation rules. Rule is the index of the rule it
// breaks in the rules of its room version, e.g. "4.3.2" (numbering shifts between versions: the
// membership rules are 4.x up to v11 and 5.x in v12).
type AuthError struct {
	Rule   string
	Reason string
	Err    error // the cause, when a callback (signature check) failed
}

func (e *AuthError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("auth rule %s: %s: %v", e.Rule, e.Reason, e.Err)
	}
	return fmt.Sprintf("auth rule %s: %s", e.Rule, e.Reason)
}

func (e *AuthError) Unwrap() error { return e.Err }

func reject(rule, format string, args ...any) *AuthError {
	return &AuthError{Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// Allowed checks ev against the authorisation rules of room version v (rules 1 and 3 onwards, and
// in v12 rule 2; the checks on the auth_events list itself are CheckAuthEvents), evaluated
// against authState: the event's auth events, the state before it, or the current state,
// depending on which check of "Checks performed on receipt of a PDU" is being made. It returns nil
// if the event is allowed and an *AuthError naming the broken rule if not.
//
// authState must also return the room's m.room.create event, which from v12 is not among an
// event's auth events (look it up by the room ID: "$" + room ID without its "!").
//
// verifyJoinAuthorisedVia checks that ev is validly signed by server (rule 4.2 of v8+, for
// join_authorised_via_users_server). If nil, the rule only requires a signature from that server
// to be present, for callers that have already verified every signature on the event.
func Allowed(v event.Version, ev *event.PDU, authState StateLookup, verifyJoinAuthorisedVia func(ev *event.PDU, server string) error) error {
	return NewChecker(v, verifyJoinAuthorisedVia).Allowed(ev, authState)
}

// Checker evaluates the authorisation rules of one room version. It caches what it parses from
// m.room.power_levels and m.room.create events by event ID, so checking many events against
// overlapping states (as state resolution does) parses each of those events once. A Checker is
// not safe for concurrent use.
type Checker struct {
	v         event.Version
	n         numbering
	verifyVia func(ev *event.PDU, server string) error
	pl        map[string]*plContent
	creators  map[string]*creatorInfo
	members   map[string]string // event ID -> membership
	joinRules map[string]string // event ID -> join rule
}

// NewChecker returns a Checker for room version v; verifyJoinAuthorisedVia is as for Allowed.
func NewChecker(v event.Version, verifyJoinAuthorisedVia func(ev *event.PDU, server string) error) *Checker {
	return &Checker{v: v, n: numberingOf(v), verifyVia: verifyJoinAuthorisedVia}
}

// cache stores a parsed value under an event ID (events without one are not cached).
func cache[T any](m *map[string]T, id string, val T) {
	if id == "" {
		return
	}
	if *m == nil {
		*m = map[string]T{}
	}
	(*m)[id] = val
}

// Version is the room version the checker applies.
func (c *Checker) Version() event.Version { return c.v }

// Allowed checks ev against authState; see the package-level Allowed. The comments number the
// rules as v6 to v11 do; v12 inserts rule 2, so its later rules are one higher (c.n has the
// numbers each version uses).
func (c *Checker) Allowed(ev *event.PDU, authState StateLookup) error {
	n := c.n
	// Rule 1: m.room.create.
	if ev.Type == TypeCreate {
		return c.checkCreate(ev)
	}

	create := authState(TypeCreate, "")
	if c.v.RoomIDFromCreateEvent() {
		// v12 rule 2: the room ID is the create event's ID with sigil "!".
		if create == nil {
			return reject(n.roomID, "no m.room.create event for the room")
		}
		if !strings.HasPrefix(create.EventID, "$") || ev.RoomID != "!"+create.EventID[1:] {
			return reject(n.roomID, "room_id %q is not the ID of the room's create event %q", ev.RoomID, create.EventID)
		}
	} else if create == nil {
		// Rule 2.4 guarantees the create event is among the auth events; without it no later rule
		// can be evaluated.
		return reject(n.authEvents+".4", "no m.room.create event in the auth state")
	}
	ci := c.creatorInfo(create)

	// Rule 3 (v12: 4): m.federate.
	if ci.noFederate && serverOf(ev.Sender) != serverOf(create.Sender) {
		return reject(n.federate, "room is not federated (m.federate is false) and sender %s is not on the creator's server", ev.Sender)
	}

	// Rule 4 (v12: 5): m.room.member.
	if ev.Type == TypeMember {
		return c.checkMember(ev, authState, create, ci)
	}

	// Rule 5: the sender must be joined.
	if m := c.membershipIn(authState, ev.Sender); m != MembershipJoin {
		return reject(n.senderJoined, "sender %s is not joined to the room (membership %q)", ev.Sender, m)
	}

	pl := c.powerLevelsFrom(authState, ci)
	senderLevel := pl.UserLevel(ev.Sender)

	// Rule 6: m.room.third_party_invite.
	if ev.Type == TypeThirdPartyInvite {
		if senderLevel >= pl.Invite {
			return nil
		}
		return reject(n.thirdPartyInvite+".1", "sender's power level %s is below the invite level %d", levelString(senderLevel), pl.Invite)
	}

	// Rule 7: the event type's required power level.
	if need := pl.EventLevel(ev.Type, ev.StateKey != nil); need > senderLevel {
		return reject(n.requiredLevel, "sending %s needs power level %d, sender has %s", ev.Type, need, levelString(senderLevel))
	}

	// Rule 8: state keys that are user IDs belong to that user.
	if ev.StateKey != nil && strings.HasPrefix(*ev.StateKey, "@") && *ev.StateKey != ev.Sender {
		return reject(n.stateKeyUser, "state_key %q starts with @ and is not the sender", *ev.StateKey)
	}

	// Rule 9: m.room.power_levels.
	if ev.Type == TypePowerLevels {
		return c.checkPowerLevels(ev, authState, pl, senderLevel, ci)
	}

	// Rule 10: otherwise, allow.
	return nil
}

// checkCreate is rule 1.
func (c *Checker) checkCreate(ev *event.PDU) error {
	if len(ev.PrevEvents) > 0 {
		return reject("1.1", "m.room.create has prev_events")
	}
	if c.v.RoomIDFromCreateEvent() {
		if ev.RoomID != "" {
			return reject("1.2", "m.room.create has a room_id")
		}
	} else {
		_, roomServer, ok := strings.Cut(ev.RoomID, ":")
		if !ok || roomServer != serverOf(ev.Sender) {
			return reject("1.2", "room_id %q is not on the sender's server", ev.RoomID)
		}
	}
	content := objectOf(ev.Content)
	if raw, ok := content["room_version"]; ok {
		var id string
		if json.Unmarshal(raw, &id) != nil || !recognisedVersion(id) {
			return reject("1.3", "room_version %s is not a recognised room version", raw)
		}
	}
	if c.v.CreatorInContent() {
		if _, ok := content["creator"]; !ok {
			return reject("1.4", "m.room.create content has no creator")
		}
	}
	if c.v.PrivilegedCreators() {
		if raw, ok := content["additional_creators"]; ok {
			var list []json.RawMessage
			if json.Unmarshal(raw, &list) != nil || list == nil {
				return reject("1.4", "additional_creators is not an array")
			}
			for _, item := range list {
				var user string
				if json.Unmarshal(item, &user) != nil {
					return reject("1.4", "additional_creators holds %s, not a string", item)
				}
				if _, err := spec.ParseUserID(user); err != nil {
					return reject("1.4", "additional_creators holds %q, not a valid user ID: %v", user, err)
				}
			}
		}
	}
	return nil
}

// recognisedVersion: every room version the spec defines is recognised, including those this
// server does not host (1 to 5); an unknown identifier is not.
func recognisedVersion(id string) bool {
	switch id {
	case "1", "2", "3", "4", "5":
		return true
	}
	_, err := event.LookupVersion(id)
	return err == nil
}

// numbering is where each rule sits in a room version's list: v12 inserted rule 2 (room ID from
// the create event), shifting the later rules by one; v8 inserted 4.2
// (join_authorised_via_users_server), shifting the membership sub-rules; v7 added knocking and
// v10 the integer checks on power levels.
type numbering struct {
	roomID, authEvents, federate, member, senderJoined, thirdPartyInvite, requiredLevel, stateKeyUser, powerLevels string

	// sub-rules of the membership rule
	mAuthorisedVia, mJoin, mInvite, mLeave, mBan, mKnock, mUnknown string
	joinPublic, joinOtherwise                                      string // sub-rules of join

	// sub-rules of the power levels rule
	plInts, plMaps, plUsers, plCreators, plNoPrevious, plTop, plEventsOld, plEventsNew, plUsersOld, plUsersNew string
}

// numberings are the numberings of the supported versions, worked out once.
var numberings = func() map[event.Version]numbering {
	m := make(map[event.Version]numbering, len(event.Versions))
	for _, v := range event.Versions {
		m[v] = numberingFor(v)
	}
	return m
}()

func numberingOf(v event.Version) numbering {
	if n, ok := numberings[v]; ok {
		return n
	}
	return numberingFor(v)
}

func numberingFor(v event.Version) numbering {
	top := func(i int) string {
		if v.RoomIDFromCreateEvent() && i >= 2 {
			i++
		}
		return fmt.Sprint(i)
	}
	n := numbering{
		authEvents: top(2), federate: top(3), member: top(4), senderJoined: top(5),
		thirdPartyInvite: top(6), requiredLevel: top(7), stateKeyUser: top(8), powerLevels: top(9),
	}
	if v.RoomIDFromCreateEvent() {
		n.roomID = "2"
	}
	sub := func(parent string, i int) string { return parent + "." + fmt.Sprint(i) }
	m := n.member
	switch {
	case v.RestrictedJoins():
		n.mAuthorisedVia, n.mJoin, n.mInvite, n.mLeave, n.mBan, n.mKnock, n.mUnknown =
			sub(m, 2), sub(m, 3), sub(m, 4), sub(m, 5), sub(m, 6), sub(m, 7), sub(m, 8)
		n.joinPublic, n.joinOtherwise = sub(n.mJoin, 6), sub(n.mJoin, 7)
	case v.Knocking():
		n.mJoin, n.mInvite, n.mLeave, n.mBan, n.mKnock, n.mUnknown =
			sub(m, 2), sub(m, 3), sub(m, 4), sub(m, 5), sub(m, 6), sub(m, 7)
		n.joinPublic, n.joinOtherwise = sub(n.mJoin, 5), sub(n.mJoin, 6)
	default:
		n.mJoin, n.mInvite, n.mLeave, n.mBan, n.mUnknown =
			sub(m, 2), sub(m, 3), sub(m, 4), sub(m, 5), sub(m, 6)
		n.joinPublic, n.joinOtherwise = sub(n.mJoin, 5), sub(n.mJoin, 6)
	}
	p := n.powerLevels
	i := 1
	next := func() string { s := sub(p, i); i++; return s }
	if v.IntegerPowerLevels() {
		n.plInts, n.plMaps = next(), next()
	}
	n.plUsers = next()
	if v.PrivilegedCreators() {
		n.plCreators = next()
	}
	n.plNoPrevious, n.plTop, n.plEventsOld, n.plEventsNew, n.plUsersOld, n.plUsersNew = next(), next(), next(), next(), next(), next()
	return n
}

// serverOf is the server name of a user ID (everything after the first colon).
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// objectOf decodes a JSON object into its members; anything else is an empty object.
func objectOf(raw json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}

// levelString prints a power level, naming the creators' infinite level.
func levelString(l int64) string {
	if l == Infinite {
		return "infinite (room creator)"
	}
	return fmt.Sprint(l)
}

// RoomIDOf is the room an event belongs to: its room_id, or for the create event of a v12+ room
// (which has none) its event ID with sigil "!".
func RoomIDOf(v event.Version, ev *event.PDU) string {
	if ev.RoomID == "" && ev.Type == TypeCreate && v.RoomIDFromCreateEvent() && strings.HasPrefix(ev.EventID, "$") {
		return "!" + ev.EventID[1:]
	}
	return ev.RoomID
}

// cached is how many parsed events the checker holds (for bounding its memory).
func (c *Checker) cached() int {
	return len(c.pl) + len(c.creators) + len(c.members) + len(c.joinRules)
}
