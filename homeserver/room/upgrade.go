package room

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Room upgrades (client-server API, "Room Upgrades", server behaviour).

// TypeTombstone is the m.room.tombstone state event that closes an upgraded room.
const TypeTombstone = "m.room.tombstone"

// UpgradeRequest is a validated POST /rooms/{roomId}/upgrade.
type UpgradeRequest struct {
	RoomID     string
	NewVersion string
	// AdditionalCreators are the new room's additional_creators (versions with privileged
	// creators only; ignored otherwise).
	AdditionalCreators []string
	User               string
	// Profile is the user's displayname and avatar for their join event in the new room.
	Profile MemberProfile
}

// transferredState are the state events (state key "") copied into the replacement room: the
// spec's recommended list. The canonical alias moves separately, with the aliases.
var transferredState = []string{"m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar", "m.room.topic",
	"m.room.guest_access", "m.room.history_visibility", TypeJoinRules}

// UpgradeRoom replaces a room by a new room of another version, in one transaction:
//
//  1. the user must be joined and have the power to send m.room.tombstone;
//  2. the new room's m.room.create has predecessor {room_id, event_id} (event_id, the tombstone's,
//     is left out for versions whose room ID comes from the create event), the room's type and
//     m.federate;
//  3. power levels (integers, old creators kept at the top level), the transferable state, the
//     space's children and the bans are copied;
//  4. local aliases and the canonical alias move to the new room, and so does the directory entry;
//  5. m.room.tombstone {body, replacement_room} closes the old room;
//  6. the old room's events_default and invite go up to max(50, users_default+1) when the user may
//     change its power levels.
//
// It returns the new room's ID.
func (s *Service) UpgradeRoom(ctx context.Context, req UpgradeRequest) (string, error) {
	nv, err := event.LookupVersion(req.NewVersion)
	if err != nil {
		return "", spec.ErrUnsupportedRoomVersion.Withf("This server does not support room version %q", req.NewVersion)
	}
	var newID string
	err = s.write(ctx, func(t *txn) error {
		old, err := t.room(req.RoomID)
		if err != nil {
			return err
		}
		if old.membership(req.User) != MembershipJoin {
			return spec.ErrForbidden.With("You are not in this room")
		}
		if !old.canSendState(req.User, TypeTombstone) {
			return spec.ErrForbidden.With("You cannot upgrade this room: your power level does not allow sending m.room.tombstone")
		}
		u := &upgrade{t: t, old: old, nv: nv, req: req}
		newID, err = u.run()
		return err
	})
	return newID, err
}

// upgrade is one room upgrade inside a write job.
type upgrade struct {
	t   *txn
	old *roomState
	nv  event.Version
	req UpgradeRequest
	new *roomState
}

func (u *upgrade) run() (string, error) {
	t, old := u.t, u.old
	u.new = &roomState{version: u.nv, state: map[StateKeyTuple]*event.PDU{}}
	predecessor := map[string]any{"room_id": old.roomID}
	tombstoned := false
	if !u.nv.RoomIDFromCreateEvent() {
		// The new room's ID is known before its create event: the tombstone goes first and the
		// predecessor names it as the old room's last event.
		u.new.roomID = newRoomID(t.s.opts.ServerName)
		tomb, err := u.tombstone()
		if err != nil {
			return "", err
		}
		predecessor["event_id"] = tomb.EventID
		tombstoned = true
	}
	if err := u.createNewRoom(predecessor); err != nil {
		return "", err
	}
	if err := u.moveAliases(); err != nil {
		return "", err
	}
	if !tombstoned {
		if _, err := u.tombstone(); err != nil {
			return "", err
		}
	}
	if err := u.restrictOldRoom(); err != nil {
		return "", err
	}
	return u.new.roomID, nil
}

func (u *upgrade) tombstone() (*event.PDU, error) {
	return u.t.append(u.old, stateProto(u.req.User, TypeTombstone, "", map[string]string{
		"body": "This room has been replaced", "replacement_room": u.new.roomID,
	}), appendOpts{})
}

// createNewRoom writes the replacement room's create event, the user's join, the power levels and
// the copied state.
func (u *upgrade) createNewRoom(predecessor map[string]any) error {
	t, old, rs, user := u.t, u.old, u.new, u.req.User
	oldCreate := objectOf(old.state[StateKeyTuple{TypeCreate, ""}].Content)
	create := map[string]any{"room_version": u.nv.ID(), "predecessor": predecessor}
	if u.nv.CreatorInContent() {
		create["creator"] = user
	}
	newCreators := []string{user}
	if u.nv.PrivilegedCreators() && len(u.req.AdditionalCreators) > 0 {
		create["additional_creators"] = u.req.AdditionalCreators
		newCreators = append(newCreators, u.req.AdditionalCreators...)
	}
	var roomType string
	if json.Unmarshal(oldCreate["type"], &roomType) == nil && roomType != "" {
		create["type"] = roomType
	}
	var federate bool
	if raw, ok := oldCreate["m.federate"]; ok && json.Unmarshal(raw, &federate) == nil && !federate {
		create["m.federate"] = false
	}
	add := func(typ, key string, content any) error {
		_, err := t.append(rs, stateProto(user, typ, key, content), appendOpts{})
		return err
	}
	if err := add(TypeCreate, "", create); err != nil {
		return err
	}
	t.rooms[rs.roomID] = rs
	oldRoom, err := t.c.Room(t.ctx, old.roomID)
	if err != nil {
		return err
	}
	// The directory entry moves with the room.
	if err := t.c.InsertRoom(t.ctx, storage.Room{RoomID: rs.roomID, Version: u.nv.ID(), Creator: user, Visibility: oldRoom.Visibility,
		CreatedTS: t.s.nowMS()}); err != nil {
		return err
	}
	if oldRoom.Visibility == DirectoryPublic {
		if err := t.c.SetRoomVisibility(t.ctx, old.roomID, DirectoryPrivate); err != nil {
			return err
		}
	}
	if err := add(TypeMember, user, newMemberContent(MembershipJoin, u.req.Profile, false)); err != nil {
		return err
	}

	// Power levels: the old room's, while the state is copied with the user raised to the level
	// that needs, then as they were.
	final := upgradedPowerLevels(old, u.nv, newCreators)
	initial := final
	if !u.nv.PrivilegedCreators() {
		if need := highestLevel(final); levelOf(final, user) < need {
			initial = withUserLevel(final, user, need)
		}
	}
	if err := add(TypePowerLevels, "", initial); err != nil {
		return err
	}
	for _, typ := range transferredState {
		if ev := old.state[StateKeyTuple{typ, ""}]; ev != nil {
			if err := add(typ, "", ev.Content); err != nil {
				return err
			}
		}
	}
	keys := make([]StateKeyTuple, 0, len(old.state))
	for k := range old.state {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b StateKeyTuple) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.StateKey, b.StateKey))
	})
	for _, k := range keys {
		if k.Type == TypeSpaceChild && roomType == RoomTypeSpace {
			if err := add(k.Type, k.StateKey, old.state[k].Content); err != nil {
				return err
			}
		}
	}
	for _, k := range keys {
		if ev := old.state[k]; k.Type == TypeMember && Membership(ev) == MembershipBan && k.StateKey != user {
			content := map[string]any{"membership": MembershipBan}
			if _, err := t.append(rs, stateProto(user, TypeMember, k.StateKey, content), appendOpts{}); err != nil &&
				!errors.Is(err, spec.ErrForbidden) {
				return err
			}
		}
	}
	if ev := old.state[StateKeyTuple{TypeCanonicalAlias, ""}]; ev != nil {
		content := objectOf(ev.Content)
		moved := map[string]json.RawMessage{}
		for _, key := range []string{"alias", "alt_aliases"} {
			if v, ok := content[key]; ok {
				moved[key] = v
			}
		}
		if len(moved) > 0 {
			if err := add(TypeCanonicalAlias, "", moved); err != nil {
				return err
			}
		}
	}
	if !sameJSON(initial, final) {
		return add(TypePowerLevels, "", final)
	}
	return nil
}

// moveAliases points the old room's local aliases at the new room and clears the old room's
// canonical alias (if the user may).
func (u *upgrade) moveAliases() error {
	t, old := u.t, u.old
	if err := t.c.MoveAliases(t.ctx, old.roomID, u.new.roomID); err != nil {
		return err
	}
	ev := old.state[StateKeyTuple{TypeCanonicalAlias, ""}]
	if ev == nil {
		return nil
	}
	content := objectOf(ev.Content)
	if _, ok := content["alias"]; !ok {
		if _, ok := content["alt_aliases"]; !ok {
			return nil
		}
	}
	_, err := t.append(old, stateProto(u.req.User, TypeCanonicalAlias, "", map[string]any{}), appendOpts{})
	if errors.Is(err, spec.ErrForbidden) {
		return nil
	}
	return err
}

// restrictOldRoom raises events_default and invite of the old room to max(50, users_default+1),
// when the user may change its power levels.
func (u *upgrade) restrictOldRoom() error {
	old := u.old
	pl := old.powerLevels()
	level := max(50, pl.UsersDefault+1)
	if pl.EventsDefault >= level && pl.Invite >= level {
		return nil
	}
	content := map[string]any{}
	if ev := old.state[StateKeyTuple{TypePowerLevels, ""}]; ev != nil {
		_ = json.Unmarshal(ev.Content, &content)
	}
	content["events_default"] = max(pl.EventsDefault, level)
	content["invite"] = max(pl.Invite, level)
	_, err := u.t.append(old, stateProto(u.req.User, TypePowerLevels, "", content), appendOpts{})
	if errors.Is(err, spec.ErrForbidden) || errors.Is(err, spec.ErrBadJSON) {
		return nil
	}
	return err
}

// upgradedPowerLevels is the old room's power levels content for the new room: unknown keys kept,
// levels as integers (the new version may require them), the old room's privileged creators who
// are not creators of the new room kept at the top level, and the new room's privileged creators
// left out of users (the auth rules of those versions refuse them there).
func upgradedPowerLevels(old *roomState, nv event.Version, newCreators []string) map[string]any {
	pl := old.powerLevels()
	content := map[string]any{}
	if ev := old.state[StateKeyTuple{TypePowerLevels, ""}]; ev != nil {
		_ = json.Unmarshal(ev.Content, &content)
	}
	content["ban"], content["kick"], content["redact"], content["invite"] = pl.Ban, pl.Kick, pl.Redact, pl.Invite
	content["events_default"], content["state_default"], content["users_default"] = pl.EventsDefault, pl.StateDefault, pl.UsersDefault
	events := map[string]int64{}
	for k, v := range pl.Events {
		events[k] = v
	}
	content["events"] = events
	if pl.Notifications != nil {
		notifications := map[string]int64{}
		for k, v := range pl.Notifications {
			notifications[k] = v
		}
		content["notifications"] = notifications
	}
	users := map[string]int64{}
	for k, v := range pl.Users {
		users[k] = v
	}
	if old.version.PrivilegedCreators() {
		top := max(100, highestLevel(content))
		for _, c := range RoomCreators(old.version, old.state[StateKeyTuple{TypeCreate, ""}]) {
			if _, ok := users[c]; !ok {
				users[c] = top
			}
		}
	}
	if nv.PrivilegedCreators() {
		for _, c := range newCreators {
			delete(users, c)
		}
	}
	content["users"] = users
	return content
}

// highestLevel is the highest level a power levels content built by upgradedPowerLevels asks for
// or gives.
func highestLevel(content map[string]any) int64 {
	var top int64
	for _, k := range topLevelKeys {
		if v, ok := content[k].(int64); ok {
			top = max(top, v)
		}
	}
	for _, k := range []string{"events", "users"} {
		if m, ok := content[k].(map[string]int64); ok {
			for _, v := range m {
				top = max(top, v)
			}
		}
	}
	return top
}

// levelOf is a user's level in a content built by upgradedPowerLevels.
func levelOf(content map[string]any, user string) int64 {
	if users, ok := content["users"].(map[string]int64); ok {
		if v, ok := users[user]; ok {
			return v
		}
	}
	v, _ := content["users_default"].(int64)
	return v
}

// withUserLevel is a copy of content with user's level set.
func withUserLevel(content map[string]any, user string, level int64) map[string]any {
	out := make(map[string]any, len(content))
	for k, v := range content {
		out[k] = v
	}
	users := map[string]int64{}
	if old, ok := content["users"].(map[string]int64); ok {
		for k, v := range old {
			users[k] = v
		}
	}
	users[user] = level
	out["users"] = users
	return out
}

func sameJSON(a, b any) bool {
	return slices.Equal(mustJSON(a), mustJSON(b))
}
