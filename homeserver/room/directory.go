package room

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Room aliases (client-server API, "Room aliases") and the published room directory ("Published
// room directory").

// TypeCanonicalAlias is the m.room.canonical_alias state event.
const TypeCanonicalAlias = "m.room.canonical_alias"

// Directory visibilities of a room.
const (
	DirectoryPublic  = "public"
	DirectoryPrivate = "private"
)

// ParseAlias splits a room alias #localpart:server, refusing what the spec's grammar (and our
// createRoom's room_alias_name rule) does not allow, with M_INVALID_PARAM.
func ParseAlias(alias string) (localpart, server string, err error) {
	bad := spec.ErrInvalidParam.Withf("Room alias %q is invalid", alias)
	if !strings.HasPrefix(alias, "#") || len(alias) > 255 {
		return "", "", bad
	}
	localpart, server, ok := strings.Cut(alias[1:], ":")
	if !ok || localpart == "" || strings.ContainsAny(localpart, "# \t\n\r\x00") {
		return "", "", bad
	}
	if spec.ValidServerName(server) != nil {
		return "", "", bad
	}
	return localpart, server, nil
}

// localAlias checks an alias is valid and of this server.
func (s *Service) localAlias(alias string) error {
	_, server, err := ParseAlias(alias)
	if err != nil {
		return err
	}
	if server != s.opts.ServerName {
		return spec.ErrInvalidParam.Withf("Room alias %s is not on this server (%s)", alias, s.opts.ServerName)
	}
	return nil
}

// LookupAlias is GET /directory/room/{roomAlias}: the room of a local alias and the servers that
// know it (ours). Remote aliases need a federation query (later issue) and are not found.
func (s *Service) LookupAlias(ctx context.Context, alias string) (roomID string, servers []string, err error) {
	_, server, err := ParseAlias(alias)
	if err != nil {
		return "", nil, err
	}
	if server != s.opts.ServerName {
		return "", nil, spec.ErrNotFound.Withf("Room alias %s not found (aliases of other servers cannot be resolved yet)", alias)
	}
	roomID, _, err = s.store.Read().Alias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil, spec.ErrNotFound.Withf("Room alias %s not found", alias)
	}
	if err != nil {
		return "", nil, err
	}
	return roomID, []string{s.opts.ServerName}, nil
}

// SetAlias is PUT /directory/room/{roomAlias}: maps a new local alias to a room the user is joined
// to (server admins: any room this server knows).
func (s *Service) SetAlias(ctx context.Context, alias, roomID, userID string, admin bool) error {
	if err := s.localAlias(alias); err != nil {
		return err
	}
	return s.write(ctx, func(t *txn) error {
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		if !admin && rs.membership(userID) != MembershipJoin {
			return spec.ErrForbidden.With("You must be in the room to create an alias for it")
		}
		taken := spec.ErrUnknown.Withf("Room alias %s already exists", alias).WithStatus(409)
		if _, _, err := t.c.Alias(t.ctx, alias); err == nil {
			return taken
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		err = t.c.InsertAlias(t.ctx, alias, roomID, userID, t.s.nowMS())
		if errors.Is(err, storage.ErrConflict) {
			return taken
		}
		return err
	})
}

// DeleteAlias is DELETE /directory/room/{roomAlias}. The alias's creator, a server admin, or a
// joined member with the power to send m.room.canonical_alias may delete it. When the room's
// canonical alias event names it, the event is updated too if the user may send it (the alias is
// deleted either way, as the spec recommends).
func (s *Service) DeleteAlias(ctx context.Context, alias, userID string, admin bool) error {
	if _, _, err := ParseAlias(alias); err != nil {
		return err
	}
	return s.write(ctx, func(t *txn) error {
		roomID, creator, err := t.c.Alias(t.ctx, alias)
		if errors.Is(err, storage.ErrNotFound) {
			return spec.ErrNotFound.Withf("Room alias %s not found", alias)
		}
		if err != nil {
			return err
		}
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		if creator != userID && !admin && !rs.canEditDirectory(userID) {
			return spec.ErrForbidden.With("You may not delete this alias: you did not create it and may not change the room's aliases")
		}
		if err := t.c.DeleteAlias(t.ctx, alias); err != nil {
			return err
		}
		return t.dropFromCanonicalAlias(rs, userID, alias)
	})
}

// dropFromCanonicalAlias removes alias from the room's m.room.canonical_alias (alias and
// alt_aliases), sent by userID; a user without the power to do so leaves the event as it is.
func (t *txn) dropFromCanonicalAlias(rs *roomState, userID, alias string) error {
	ev := rs.state[StateKeyTuple{TypeCanonicalAlias, ""}]
	if ev == nil {
		return nil
	}
	var content map[string]any
	if json.Unmarshal(ev.Content, &content) != nil {
		return nil
	}
	changed := false
	if a, _ := content["alias"].(string); a == alias {
		delete(content, "alias")
		changed = true
	}
	if alts, ok := content["alt_aliases"].([]any); ok {
		kept := make([]any, 0, len(alts))
		for _, a := range alts {
			if a != alias {
				kept = append(kept, a)
			}
		}
		if len(kept) != len(alts) {
			content["alt_aliases"] = kept
			changed = true
		}
	}
	if !changed {
		return nil
	}
	_, err := t.append(rs, stateProto(userID, TypeCanonicalAlias, "", content), appendOpts{})
	if errors.Is(err, spec.ErrForbidden) {
		return nil
	}
	return err
}

// RoomAliases is GET /rooms/{roomId}/aliases: the local aliases of a room, for its joined members,
// anyone when it is world_readable, and server admins.
func (s *Service) RoomAliases(ctx context.Context, roomID, userID string, admin bool) ([]string, error) {
	c := s.store.Read()
	if !admin {
		forbidden := spec.ErrForbidden.With("You are not a member of the room")
		if _, err := c.Room(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
			return nil, forbidden
		} else if err != nil {
			return nil, err
		}
		v, err := loadViewer(ctx, c, roomID, userID)
		if err != nil {
			return nil, err
		}
		if v.current() != MembershipJoin && !v.worldReadableNow() {
			return nil, forbidden
		}
	}
	aliases, err := c.AliasesOfRoom(ctx, roomID)
	if aliases == nil {
		aliases = []string{}
	}
	return aliases, err
}

// DirectoryVisibility is GET /directory/list/room/{roomId}.
func (s *Service) DirectoryVisibility(ctx context.Context, roomID string) (string, error) {
	r, err := s.store.Read().Room(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", spec.ErrNotFound.With("Room not found")
	}
	if err != nil {
		return "", err
	}
	if r.Visibility == DirectoryPublic {
		return DirectoryPublic, nil
	}
	return DirectoryPrivate, nil
}

// SetDirectoryVisibility is PUT /directory/list/room/{roomId}: a server admin, or a joined member
// who created the room or may send m.room.canonical_alias, publishes or hides the room.
func (s *Service) SetDirectoryVisibility(ctx context.Context, roomID, userID string, admin bool, visibility string) error {
	if visibility != DirectoryPublic && visibility != DirectoryPrivate {
		return spec.ErrInvalidParam.With("visibility must be public or private")
	}
	return s.write(ctx, func(t *txn) error {
		rs, err := t.room(roomID)
		if errors.Is(err, errRoomNotFound) {
			return spec.ErrNotFound.With("Room not found")
		}
		if err != nil {
			return err
		}
		if !admin && !rs.canEditDirectory(userID) {
			return spec.ErrForbidden.With("You may not change this room's visibility in the room directory")
		}
		return t.c.SetRoomVisibility(t.ctx, roomID, visibility)
	})
}

// membership is the user's membership in the room's current state ("" if none).
func (rs *roomState) membership(userID string) string {
	return Membership(rs.state[StateKeyTuple{TypeMember, userID}])
}

// powerLevels are the room's effective power levels (invalid values left at their defaults).
func (rs *roomState) powerLevels() *PowerLevels {
	pl, _ := NewPowerLevels(rs.version, rs.state[StateKeyTuple{TypeCreate, ""}], rs.state[StateKeyTuple{TypePowerLevels, ""}])
	return pl
}

// canSendState reports whether a joined user's power level allows sending a state event of typ.
func (rs *roomState) canSendState(userID, typ string) bool {
	if rs.membership(userID) != MembershipJoin {
		return false
	}
	pl := rs.powerLevels()
	return pl.UserLevel(userID) >= pl.EventLevel(typ, true)
}

// canEditDirectory reports whether a user may change the room's aliases and directory entry: a
// joined member who is a creator of the room or may send m.room.canonical_alias.
func (rs *roomState) canEditDirectory(userID string) bool {
	if rs.membership(userID) != MembershipJoin {
		return false
	}
	if create := rs.state[StateKeyTuple{TypeCreate, ""}]; create != nil && slices.Contains(RoomCreators(rs.version, create), userID) {
		return true
	}
	return rs.canSendState(userID, TypeCanonicalAlias)
}

// stateProto is a state event from sender.
func stateProto(sender, typ, stateKey string, content any) event.Proto {
	return event.Proto{Sender: sender, Type: typ, StateKey: stateKeyPtr(stateKey), Content: mustJSON(content)}
}

// PublicRoomsRequest is a validated /publicRooms query (GET parameters or POST body).
type PublicRoomsRequest struct {
	Limit int // 0: the default
	Since string
	// SearchTerm matches name, topic and canonical alias, case-insensitively.
	SearchTerm string
	// RoomTypes keeps rooms of these types; a nil entry is rooms without a type. Empty: all.
	RoomTypes            []*string
	IncludeAllNetworks   bool
	ThirdPartyInstanceID string
}

// PublicRoomsPage is a /publicRooms response.
type PublicRoomsPage struct {
	Chunk     []PublicRoom `json:"chunk"`
	NextBatch string       `json:"next_batch,omitempty"`
	PrevBatch string       `json:"prev_batch,omitempty"`
	Total     int          `json:"total_room_count_estimate"`
}

// Public room paging.
const (
	DefaultPublicRoomsLimit = 100
	MaxPublicRoomsLimit     = 500
)

// dirKey orders the published rooms: by creation time, then room ID. It never
// changes for a room, so tokens made of keys page without repeating or skipping a room.
type dirKey struct {
	ts     int64
	roomID string
}

func (k dirKey) less(o dirKey) bool { return k.ts < o.ts || k.ts == o.ts && k.roomID < o.roomID }

func (k dirKey) token(prefix string) string {
	return prefix + base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.ts, 10)+"_"+k.roomID))
}

// parseDirToken reads a since token: forward says it is a next_batch token (else prev_batch).
func parseDirToken(tok string) (k dirKey, forward bool, err error) {
	bad := spec.ErrInvalidParam.Withf("Invalid pagination token %q", tok)
	if len(tok) < 2 || tok[0] != 'n' && tok[0] != 'p' {
		return k, false, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok[1:])
	if err != nil {
		return k, false, bad
	}
	ts, roomID, ok := strings.Cut(string(raw), "_")
	n, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || !strings.HasPrefix(roomID, "!") {
		return k, false, bad
	}
	return dirKey{n, roomID}, tok[0] == 'n', nil
}

// PublicRooms is /publicRooms on this server: the published rooms that still have joined members,
// filtered, in a stable order, one page at a time.
func (s *Service) PublicRooms(ctx context.Context, req PublicRoomsRequest) (PublicRoomsPage, error) {
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		return PublicRoomsPage{}, spec.ErrInvalidParam.With("include_all_networks cannot be combined with third_party_instance_id")
	}
	limit := req.Limit
	if limit <= 0 {
		limit = DefaultPublicRoomsLimit
	}
	limit = min(limit, MaxPublicRoomsLimit)
	var from dirKey
	forward, hasSince := true, req.Since != ""
	if hasSince {
		var err error
		if from, forward, err = parseDirToken(req.Since); err != nil {
			return PublicRoomsPage{}, err
		}
	}
	page := PublicRoomsPage{Chunk: []PublicRoom{}}
	if req.ThirdPartyInstanceID != "" {
		return page, nil // no application service publishes rooms of other networks here
	}
	c := s.store.Read()
	rooms, err := c.PublishedRooms(ctx)
	if err != nil {
		return page, err
	}
	ids := make([]string, len(rooms))
	for i, r := range rooms {
		ids[i] = r.RoomID
	}
	sums, err := loadSummaries(ctx, c, ids, false)
	if err != nil {
		return page, err
	}
	term := strings.ToLower(req.SearchTerm)
	var list []*summary
	for _, r := range rooms {
		sum := sums[r.RoomID]
		if sum == nil || sum.NumJoinedMembers == 0 || !matchesRoomTypes(req.RoomTypes, sum.RoomType) {
			continue
		}
		if term != "" && !strings.Contains(strings.ToLower(sum.Name), term) && !strings.Contains(strings.ToLower(sum.Topic), term) &&
			!strings.Contains(strings.ToLower(sum.CanonicalAlias), term) {
			continue
		}
		list = append(list, sum)
	}
	key := func(sum *summary) dirKey { return dirKey{sum.createdTS, sum.RoomID} }
	slices.SortFunc(list, func(a, b *summary) int {
		switch {
		case key(a).less(key(b)):
			return -1
		case key(b).less(key(a)):
			return 1
		}
		return 0
	})
	page.Total = len(list)
	start, end := 0, min(limit, len(list))
	if hasSince {
		// i is the first room after the token's key (forward) or at or after it (backward).
		i := 0
		for i < len(list) && (key(list[i]).less(from) || forward && key(list[i]) == from) {
			i++
		}
		if forward {
			start, end = i, min(i+limit, len(list))
		} else {
			start, end = max(0, i-limit), i
		}
	}
	for _, sum := range list[start:end] {
		page.Chunk = append(page.Chunk, sum.PublicRoom)
	}
	if end > start {
		if end < len(list) {
			page.NextBatch = key(list[end-1]).token("n")
		}
		if start > 0 {
			page.PrevBatch = key(list[start]).token("p")
		}
	}
	return page, nil
}

func matchesRoomTypes(types []*string, roomType string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if t == nil && roomType == "" || t != nil && *t == roomType {
			return true
		}
	}
	return false
}
