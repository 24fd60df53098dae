package event

import "fmt"

// Version is a room version. Every behaviour that differs between versions is a method here, so
// the rest of the code asks "does this version do X" instead of switching on version strings.
type Version struct {
	id string
	n  int // the numeric version; every supported version is an integer
}

// Supported room versions, oldest first.
var (
	V6  = Version{"6", 6}
	V7  = Version{"7", 7}
	V8  = Version{"8", 8}
	V9  = Version{"9", 9}
	V10 = Version{"10", 10}
	V11 = Version{"11", 11}
	V12 = Version{"12", 12}
)

// Versions lists every supported room version.
var Versions = []Version{V6, V7, V8, V9, V10, V11, V12}

// LookupVersion finds a supported room version by its identifier.
func LookupVersion(id string) (Version, error) {
	for _, v := range Versions {
		if v.id == id {
			return v, nil
		}
	}
	return Version{}, fmt.Errorf("unsupported room version %q", id)
}

// ID is the version identifier as it appears in m.room.create ("11").
func (v Version) ID() string { return v.id }

func (v Version) String() string { return v.id }

// Known reports whether v is a real version (the zero Version is not).
func (v Version) Known() bool { return v.n != 0 }

// Stable reports whether the spec marks the version stable (all supported ones are).
func (v Version) Stable() bool { return v.n != 0 }

// Knocking: the knock membership and join rule exist (v7+).
func (v Version) Knocking() bool { return v.n >= 7 }

// RestrictedJoins: the restricted join rule and join_authorised_via_users_server exist (v8+).
func (v Version) RestrictedJoins() bool { return v.n >= 8 }

// KnockRestricted: the knock_restricted join rule exists (v10+).
func (v Version) KnockRestricted() bool { return v.n >= 10 }

// IntegerPowerLevels: power level values must be JSON integers, not strings (v10+).
func (v Version) IntegerPowerLevels() bool { return v.n >= 10 }

// RedactKeepsJoinRulesAllow: redaction keeps "allow" in m.room.join_rules content (v8+).
func (v Version) RedactKeepsJoinRulesAllow() bool { return v.n >= 8 }

// RedactKeepsJoinAuthorisedVia: redaction keeps join_authorised_via_users_server in
// m.room.member content (v9+).
func (v Version) RedactKeepsJoinAuthorisedVia() bool { return v.n >= 9 }

// RedactionRulesV11: the v11 redaction algorithm (keeps all of m.room.create content, "invite" in
// power levels, "redacts" in m.room.redaction content; drops top-level origin, membership and
// prev_state).
func (v Version) RedactionRulesV11() bool { return v.n >= 11 }

// RedactsInContent: m.room.redaction carries "redacts" in content rather than at the top level
// (v11+).
func (v Version) RedactsInContent() bool { return v.n >= 11 }

// CreatorInContent: m.room.create content has a "creator" key (before v11; from v11 the sender
// is the creator).
func (v Version) CreatorInContent() bool { return v.n < 11 }

// RoomIDFromCreateEvent: the room ID is the create event's ID with sigil "!" and the create event
// has no room_id (v12+).
func (v Version) RoomIDFromCreateEvent() bool { return v.n >= 12 }

// CreateEventInAuthEvents: events cite the create event in auth_events (before v12; from v12 the
// room ID implies it and it must not be cited).
func (v Version) CreateEventInAuthEvents() bool { return v.n < 12 }

// FullEventsInStrippedState: invite_room_state and knock_room_state must hold full, signed events
// (v12+, the spec's SHOULD). Earlier versions accept the bare stripped state events (type,
// state_key, sender, content) that servers sent before v1.16 and still send (Dendrite).
func (v Version) FullEventsInStrippedState() bool { return v.n >= 12 }

// PrivilegedCreators: the create event's sender and additional_creators have infinite power level
// and cannot appear in m.room.power_levels (v12+).
func (v Version) PrivilegedCreators() bool { return v.n >= 12 }

// StateResV21: state resolution v2.1 (v12+), which starts the iterative auth checks from the empty
// state and also resolves the conflicted state subgraph; earlier versions use v2.
func (v Version) StateResV21() bool { return v.n >= 12 }
