package room

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Infinite is the power level of a room creator in room versions with privileged creators (v12+):
// above any level an m.room.power_levels event can hold.
const Infinite int64 = math.MaxInt64

// Default levels (client-server API, m.room.power_levels).
const (
	DefaultBan               = 50
	DefaultKick              = 50
	DefaultRedact            = 50
	DefaultInvite            = 0
	DefaultEventsDefault     = 0
	DefaultStateDefault      = 50
	DefaultUsersDefault      = 0
	DefaultNotificationLevel = 50 // notifications.room
	// DefaultCreatorLevel is the creator's level in rooms (v1 to v11) with no power levels event.
	DefaultCreatorLevel = 100
)

// PowerLevels are the effective power levels of a room: an m.room.power_levels event with the
// defaults filled in, or the defaults alone when the room has none, plus (v12+) the room creators'
// infinite level. The maps are shared with caches: read them, never write them.
type PowerLevels struct {
	Ban, Kick, Redact, Invite   int64
	EventsDefault, StateDefault int64
	UsersDefault                int64
	Events                      map[string]int64
	Notifications               map[string]int64
	Users                       map[string]int64

	creators map[string]struct{}
}

// UserLevel is the power level of user: Infinite for a room creator in v12+, else the users entry
// or users_default.
func (p *PowerLevels) UserLevel(user string) int64 {
	if _, ok := p.creators[user]; ok {
		return Infinite
	}
	if l, ok := p.Users[user]; ok {
		return l
	}
	return p.UsersDefault
}

// EventLevel is the level needed to send an event of type typ: the events entry, or state_default
// for state events and events_default for others.
func (p *PowerLevels) EventLevel(typ string, isState bool) int64 {
	if l, ok := p.Events[typ]; ok {
		return l
	}
	if isState {
		return p.StateDefault
	}
	return p.EventsDefault
}

// NotificationLevel is the level needed to trigger the notification key (e.g. "room" for @room).
func (p *PowerLevels) NotificationLevel(key string) int64 {
	if l, ok := p.Notifications[key]; ok {
		return l
	}
	return DefaultNotificationLevel
}

// IsCreator reports whether user is a room creator with infinite power (v12+ only).
func (p *PowerLevels) IsCreator(user string) bool {
	_, ok := p.creators[user]
	return ok
}

// NewPowerLevels computes the effective power levels from the room's create event and its
// m.room.power_levels event (nil if the room has none). An error reports values the room version
// does not accept; the returned levels are still usable, with those values left at their
// defaults.
func NewPowerLevels(v event.Version, create, powerLevels *event.PDU) (*PowerLevels, error) {
	var content *plContent
	var err error
	if powerLevels != nil {
		var probs *plProblems
		content, probs = parsePowerLevels(v, powerLevels.Content)
		err = probs.first()
	}
	var ci *creatorInfo
	if create != nil {
		ci = newCreatorInfo(v, create)
	}
	return buildPowerLevels(content, ci), err
}

// powerLevelsFrom is NewPowerLevels over a state, with parsing cached by event ID.
func (c *Checker) powerLevelsFrom(state StateLookup, ci *creatorInfo) *PowerLevels {
	return buildPowerLevels(c.plContentOf(state(TypePowerLevels, "")), ci)
}

// PowerLevels is NewPowerLevels with the checker's caches; errors in the content are ignored (the
// event was already accepted).
func (c *Checker) PowerLevels(create, powerLevels *event.PDU) *PowerLevels {
	var ci *creatorInfo
	if create != nil {
		ci = c.creatorInfo(create)
	}
	return buildPowerLevels(c.plContentOf(powerLevels), ci)
}

func (c *Checker) plContentOf(ev *event.PDU) *plContent {
	if ev == nil {
		return nil
	}
	if pc, ok := c.pl[ev.EventID]; ok && ev.EventID != "" {
		return pc
	}
	pc, _ := parsePowerLevels(c.v, ev.Content)
	cache(&c.pl, ev.EventID, pc)
	return pc
}

func buildPowerLevels(content *plContent, ci *creatorInfo) *PowerLevels {
	p := &PowerLevels{
		Ban: DefaultBan, Kick: DefaultKick, Redact: DefaultRedact, Invite: DefaultInvite,
		EventsDefault: DefaultEventsDefault, StateDefault: DefaultStateDefault, UsersDefault: DefaultUsersDefault,
	}
	if ci != nil {
		p.creators = ci.creators
	}
	if content == nil {
		// No power levels event: before v12 the creator has 100 and everyone else 0.
		if ci != nil && ci.creators == nil && ci.creator != "" {
			p.Users = map[string]int64{ci.creator: DefaultCreatorLevel}
		}
		return p
	}
	for i, dst := range []*int64{&p.UsersDefault, &p.EventsDefault, &p.StateDefault, &p.Ban, &p.Redact, &p.Kick, &p.Invite} {
		if content.set[i] {
			*dst = content.top[i]
		}
	}
	p.Events, p.Notifications, p.Users = content.events, content.notifications, content.users
	return p
}

// topLevelKeys are the integer properties of m.room.power_levels content, in the order the auth
// rules list them.
var topLevelKeys = [7]string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

// plContent is m.room.power_levels content as the auth rules see it: which properties are present
// and their values.
type plContent struct {
	top           [7]int64
	set           [7]bool
	events        map[string]int64 // nil: absent
	notifications map[string]int64
	users         map[string]int64
}

// powerLevelsError is a power levels content the room version does not accept.
type powerLevelsError struct {
	field  string // "ban", "users", "events.m.room.name", ...
	reason string
}

func (e *powerLevelsError) Error() string { return e.field + ": " + e.reason }

// plProblems are the first problem found in each group of properties the auth rules check
// separately (v10+ rules 9.1, 9.2 and 9.3; before v10 only users is checked by a rule).
type plProblems struct {
	top, maps, users *powerLevelsError
}

func (p *plProblems) first() error {
	switch {
	case p == nil:
		return nil
	case p.top != nil:
		return p.top
	case p.maps != nil:
		return p.maps
	case p.users != nil:
		return p.users
	}
	return nil
}

// parsePowerLevels decodes m.room.power_levels content. Values must be integers; before v10 a
// string holding an integer is accepted too. Keys of users must be user IDs. Invalid values are
// left out of the result and reported in the problems (nil if there are none).
func parsePowerLevels(v event.Version, raw json.RawMessage) (*plContent, *plProblems) {
	pc := &plContent{}
	obj := objectOf(raw)
	var probs plProblems
	fail := func(dst **powerLevelsError, field, format string, args ...any) {
		if *dst == nil {
			*dst = &powerLevelsError{field: field, reason: fmt.Sprintf(format, args...)}
		}
	}
	for i, key := range topLevelKeys {
		rawLevel, ok := obj[key]
		if !ok {
			continue
		}
		l, err := parseLevel(v, rawLevel)
		if err != nil {
			fail(&probs.top, key, "%v", err)
			continue
		}
		pc.top[i], pc.set[i] = l, true
	}
	for _, key := range [2]string{"events", "notifications"} {
		rawMap, ok := obj[key]
		if !ok {
			continue
		}
		m, isObj := levelMap(v, rawMap, func(k, problem string) { fail(&probs.maps, key+"."+k, "%s", problem) })
		if !isObj {
			fail(&probs.maps, key, "not an object")
		}
		if key == "events" {
			pc.events = m
		} else {
			pc.notifications = m
		}
	}
	if rawUsers, ok := obj["users"]; ok {
		users, isObj := levelMap(v, rawUsers, func(key, problem string) { fail(&probs.users, "users."+key, "%s", problem) })
		if !isObj {
			fail(&probs.users, "users", "not an object")
		}
		for _, user := range sortedKeys(users) {
			if _, err := spec.ParseUserID(user); err != nil {
				delete(users, user)
				fail(&probs.users, "users."+user, "not a valid user ID: %v", err)
			}
		}
		pc.users = users
	}
	if probs == (plProblems{}) {
		return pc, nil
	}
	return pc, &probs
}

// levelMap decodes an object of levels; bad values are reported and left out. The second result
// is false if raw is not an object.
func levelMap(v event.Version, raw json.RawMessage, bad func(key, problem string)) (map[string]int64, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil || obj == nil {
		return map[string]int64{}, false
	}
	m := make(map[string]int64, len(obj))
	for k, rawLevel := range obj {
		l, err := parseLevel(v, rawLevel)
		if err != nil {
			bad(k, err.Error())
			continue
		}
		m[k] = l
	}
	return m, true
}

// parseLevel decodes one power level: a JSON integer, or before v10 also a string holding one
// (optional surrounding whitespace, optional sign, decimal digits; room versions 1-9,
// "m.room.power_levels events accept values as strings").
func parseLevel(v event.Version, raw json.RawMessage) (int64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0, fmt.Errorf("empty value")
	}
	switch c := raw[0]; {
	case c == '-' || (c >= '0' && c <= '9'):
		l, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s is not an integer", raw)
		}
		return l, nil
	case c == '"' && !v.IntegerPowerLevels():
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("%s is not a string", raw)
		}
		return parseStringLevel(s)
	default:
		if v.IntegerPowerLevels() {
			return 0, fmt.Errorf("%s is not an integer", raw)
		}
		return 0, fmt.Errorf("%s is neither an integer nor a string holding one", raw)
	}
}

func parseStringLevel(s string) (int64, error) {
	t := strings.TrimSpace(s)
	digits := t
	if digits != "" && (digits[0] == '+' || digits[0] == '-') {
		digits = digits[1:]
	}
	if digits == "" {
		return 0, fmt.Errorf("%q does not hold an integer", s)
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, fmt.Errorf("%q does not hold an integer", s)
		}
	}
	l, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return l, nil
}

// creatorInfo is what the rules need from an m.room.create event.
type creatorInfo struct {
	// creator is the user the rules call "the creator": content.creator before v11, the sender
	// from v11. It may join first (rule 4.3.1) and has level 100 when there are no power levels
	// (before v12).
	creator string
	// creators (v12+) are the sender and additional_creators, who have infinite power. nil before
	// v12.
	creators map[string]struct{}
	list     []string // the creators in order: sender, then additional_creators
	// noFederate is content["m.federate"] == false.
	noFederate bool
}

func newCreatorInfo(v event.Version, create *event.PDU) *creatorInfo {
	ci := &creatorInfo{}
	content := objectOf(create.Content)
	if v.CreatorInContent() {
		_ = json.Unmarshal(content["creator"], &ci.creator)
	} else {
		ci.creator = create.Sender
	}
	if v.PrivilegedCreators() {
		ci.creators = map[string]struct{}{create.Sender: {}}
		ci.list = []string{create.Sender}
		var extra []any
		_ = json.Unmarshal(content["additional_creators"], &extra)
		for _, u := range extra {
			if s, ok := u.(string); ok {
				if _, dup := ci.creators[s]; !dup {
					ci.creators[s] = struct{}{}
					ci.list = append(ci.list, s)
				}
			}
		}
	}
	if raw, ok := content["m.federate"]; ok && string(bytes.TrimSpace(raw)) == "false" {
		ci.noFederate = true
	}
	return ci
}

func (c *Checker) creatorInfo(create *event.PDU) *creatorInfo {
	if ci, ok := c.creators[create.EventID]; ok && create.EventID != "" {
		return ci
	}
	ci := newCreatorInfo(c.v, create)
	cache(&c.creators, create.EventID, ci)
	return ci
}

// RoomCreators lists the room's creators as room version v defines them: content.creator before
// v11, the create event's sender from v11, plus additional_creators from v12.
func RoomCreators(v event.Version, create *event.PDU) []string {
	ci := newCreatorInfo(v, create)
	if ci.creators == nil {
		if ci.creator == "" {
			return nil
		}
		return []string{ci.creator}
	}
	return ci.list
}
