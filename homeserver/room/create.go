package room

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Presets of POST /createRoom.
const (
	PresetPrivateChat        = "private_chat"
	PresetTrustedPrivateChat = "trusted_private_chat"
	PresetPublicChat         = "public_chat"
)

// StateEvent is one event of createRoom's initial_state.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRequest is a validated POST /createRoom body.
type CreateRequest struct {
	Creator                   string
	Visibility                string // "public" publishes the room in the directory
	RoomAliasName             string
	Name                      string
	Topic                     string
	Invite                    []string
	RoomVersion               string
	CreationContent           json.RawMessage
	InitialState              []StateEvent
	Preset                    string
	IsDirect                  bool
	PowerLevelContentOverride json.RawMessage
	// CreatorProfile is the creator's displayname and avatar_url for their join event.
	CreatorProfile MemberProfile
}

// MemberProfile is the profile copied into m.room.member events.
type MemberProfile struct {
	DisplayName string
	AvatarURL   string
}

// CreateRoom creates a room with all its initial events in one transaction, in the order the spec
// gives: create, creator's join, power levels, canonical alias, preset state, initial_state, name,
// topic, invites.
func (s *Service) CreateRoom(ctx context.Context, req CreateRequest) (string, error) {
	v := s.opts.DefaultVersion
	if req.RoomVersion != "" {
		var err error
		if v, err = event.LookupVersion(req.RoomVersion); err != nil {
			return "", spec.ErrUnsupportedRoomVersion.Withf("Room version %q is not supported", req.RoomVersion)
		}
	}
	preset := req.Preset
	if preset == "" {
		preset = PresetPrivateChat
		if req.Visibility == "public" {
			preset = PresetPublicChat
		}
	}
	createContent := map[string]any{}
	if len(req.CreationContent) > 0 {
		if err := json.Unmarshal(req.CreationContent, &createContent); err != nil {
			return "", spec.ErrBadJSON.With("creation_content must be an object")
		}
	}
	createContent["room_version"] = v.ID()
	if v.PrivilegedCreators() && preset == PresetTrustedPrivateChat && len(req.Invite) > 0 {
		// Invitees of a trusted private chat get the creator's power: from v12 that means
		// being an additional creator (merged with any the client gave, without duplicates).
		seen := map[string]bool{}
		var creators []any
		if list, ok := createContent["additional_creators"].([]any); ok {
			for _, c := range list {
				if s, ok := c.(string); ok && !seen[s] {
					seen[s] = true
					creators = append(creators, s)
				}
			}
		}
		for _, inv := range req.Invite {
			if !seen[inv] && inv != req.Creator {
				seen[inv] = true
				creators = append(creators, inv)
			}
		}
		createContent["additional_creators"] = creators
	}
	if v.CreatorInContent() {
		createContent["creator"] = req.Creator
	} else {
		delete(createContent, "creator")
	}
	var alias string
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + s.opts.ServerName
		if strings.ContainsAny(req.RoomAliasName, ":# \t\n") || len(alias) > 255 {
			return "", spec.ErrInvalidParam.With("room_alias_name is not a valid alias localpart")
		}
	}

	var roomID string
	err := s.write(ctx, func(t *txn) error {
		rs := &roomState{version: v, state: map[StateKeyTuple]*event.PDU{}}
		if !v.RoomIDFromCreateEvent() {
			rs.roomID = newRoomID(s.opts.ServerName)
		}
		creator := req.Creator
		appendState := func(typ, key string, content any) error {
			_, err := t.append(rs, event.Proto{Sender: creator, Type: typ, StateKey: stateKeyPtr(key), Content: mustJSON(content)}, appendOpts{})
			var se *spec.Error
			if errors.Is(err, spec.ErrForbidden) && errors.As(err, &se) {
				// The request's own parameters make the room's state fail the auth rules.
				return spec.ErrInvalidRoomState.Withf("%s: %s", typ, se.Message)
			}
			return err
		}
		if err := appendState(TypeCreate, "", createContent); err != nil {
			return err
		}
		t.rooms[rs.roomID] = rs
		if err := t.c.InsertRoom(t.ctx, storage.Room{RoomID: rs.roomID, Version: v.ID(), Creator: creator,
			Visibility: visibilityOr(req.Visibility), CreatedTS: s.nowMS()}); err != nil {
			return err
		}
		if err := appendState(TypeMember, creator, newMemberContent(MembershipJoin, req.CreatorProfile, false)); err != nil {
			return err
		}
		pl, err := s.initialPowerLevels(v, creator, preset, req)
		if err != nil {
			return err
		}
		if err := appendState(TypePowerLevels, "", pl); err != nil {
			return err
		}
		if alias != "" {
			err := t.c.InsertAlias(t.ctx, alias, rs.roomID, creator, s.nowMS())
			if errors.Is(err, storage.ErrConflict) {
				return spec.ErrRoomInUse.With("Room alias already taken")
			}
			if err != nil {
				return err
			}
			if err := appendState("m.room.canonical_alias", "", map[string]any{"alias": alias}); err != nil {
				return err
			}
		}
		joinRule, guest := "invite", "can_join"
		if preset == PresetPublicChat {
			joinRule, guest = "public", "forbidden"
		}
		presetState := []StateEvent{
			{Type: TypeJoinRules, Content: mustJSON(map[string]string{"join_rule": joinRule})},
			{Type: "m.room.history_visibility", Content: mustJSON(map[string]string{"history_visibility": "shared"})},
			{Type: "m.room.guest_access", Content: mustJSON(map[string]string{"guest_access": guest})},
		}
		// initial_state overrides the preset's events of the same type and key.
		overridden := map[StateKeyTuple]bool{}
		for _, ev := range req.InitialState {
			overridden[StateKeyTuple{ev.Type, ev.StateKey}] = true
		}
		for _, ev := range presetState {
			if !overridden[StateKeyTuple{ev.Type, ev.StateKey}] {
				if err := appendState(ev.Type, ev.StateKey, ev.Content); err != nil {
					return err
				}
			}
		}
		for _, ev := range req.InitialState {
			if err := appendState(ev.Type, ev.StateKey, ev.Content); err != nil {
				return err
			}
		}
		if req.Name != "" {
			if err := appendState("m.room.name", "", map[string]string{"name": req.Name}); err != nil {
				return err
			}
		}
		if req.Topic != "" {
			if err := appendState("m.room.topic", "", topicContent(req.Topic)); err != nil {
				return err
			}
		}
		for _, invitee := range req.Invite {
			if serverOf(invitee) != s.opts.ServerName {
				// Invites of users of other servers need their server's signature: the caller
				// sends them over federation once the room exists.
				continue
			}
			if err := appendState(TypeMember, invitee, newMemberContent(MembershipInvite, MemberProfile{}, req.IsDirect)); err != nil {
				return err
			}
		}
		roomID = rs.roomID
		return nil
	})
	return roomID, err
}

// topicContent is m.room.topic content with the plain topic and its m.topic form.
func topicContent(topic string) map[string]any {
	return map[string]any{"topic": topic, "m.topic": map[string]any{"m.text": []map[string]string{{"body": topic, "mimetype": "text/plain"}}}}
}

func visibilityOr(v string) string {
	if v == "public" {
		return "public"
	}
	return "private"
}

func newMemberContent(membership string, p MemberProfile, isDirect bool) map[string]any {
	c := map[string]any{"membership": membership}
	if p.DisplayName != "" {
		c["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		c["avatar_url"] = p.AvatarURL
	}
	if isDirect {
		c["is_direct"] = true
	}
	return c
}

// initialPowerLevels is the default m.room.power_levels of a new room with the preset's changes
// and power_level_content_override applied on top.
func (s *Service) initialPowerLevels(v event.Version, creator, preset string, req CreateRequest) (map[string]any, error) {
	users := map[string]any{}
	if !v.PrivilegedCreators() {
		users[creator] = 100
	}
	if preset == PresetTrustedPrivateChat && !v.PrivilegedCreators() {
		for _, inv := range req.Invite {
			users[inv] = 100
		}
	}
	pl := map[string]any{
		"users": users, "users_default": 0,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"notifications": map[string]any{"room": 50},
	}
	if len(req.PowerLevelContentOverride) > 0 {
		var override map[string]any
		if err := json.Unmarshal(req.PowerLevelContentOverride, &override); err != nil {
			return nil, spec.ErrBadJSON.With("power_level_content_override must be an object")
		}
		for k, val := range override {
			pl[k] = val
		}
	}
	return pl, nil
}

// newRoomID makes a room ID !<18 random letters>:<server> for room versions before 12.
func newRoomID(serverName string) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [18]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "!" + string(b[:]) + ":" + serverName
}
