package room

import (
	"context"
	"slices"
	"strings"
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The user directory (module "User directory"): POST /user_directory/search finds the users a
// searcher can see through rooms, by user ID or display name. The users searched are the joined
// members of the rooms the searcher is joined to and of every room this server knows whose join
// rule is public or whose history is world_readable, as the spec asks at a minimum; no one else,
// so the directory tells nobody about users they could not meet in a room anyway.

// DirectoryUser is one result of a user directory search.
type DirectoryUser struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// MaxDirectoryLimit caps the results of one search.
const MaxDirectoryLimit = 100

// SearchUsers returns up to limit users visible to viewer whose user ID or display name holds every
// word of term (case-insensitively), best matches first, and whether there were more.
func (s *Service) SearchUsers(ctx context.Context, viewer, term string, limit int) ([]DirectoryUser, bool, error) {
	words := strings.Fields(strings.ToLower(term))
	if len(words) == 0 {
		return []DirectoryUser{}, false, nil
	}
	limit = min(max(limit, 1), MaxDirectoryLimit)
	open, err := s.openRoomMembers(ctx)
	if err != nil {
		return nil, false, err
	}
	c := s.store.Read()
	mine, err := c.RoomsOfUser(ctx, viewer, MembershipJoin)
	if err != nil {
		return nil, false, err
	}
	var rooms []string // the viewer's rooms that are not open: their members are read now
	for _, m := range mine {
		if !open.rooms[m.RoomID] {
			rooms = append(rooms, m.RoomID)
		}
	}
	events, err := c.JoinedMemberEvents(ctx, rooms)
	if err != nil {
		return nil, false, err
	}
	members := append(membersOf(events), open.members...)
	type match struct {
		DirectoryUser
		rank int // 0: the display name or the user ID's localpart starts with the term
	}
	seen := map[string]bool{}
	var found []match
	for _, m := range members {
		userID, name, avatar := m.UserID, m.DisplayName, m.AvatarURL
		if seen[userID] {
			continue
		}
		lowID, lowName := strings.ToLower(userID), strings.ToLower(name)
		if !allWordsIn(words, lowID, lowName) {
			continue
		}
		seen[userID] = true
		rank := 1
		if joined := strings.Join(words, " "); strings.HasPrefix(lowName, joined) || strings.HasPrefix(lowID[1:], joined) {
			rank = 0
		}
		found = append(found, match{DirectoryUser{UserID: userID, DisplayName: name, AvatarURL: avatar}, rank})
	}
	slices.SortFunc(found, func(a, b match) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		// Users with a display name before those without, then by name and ID.
		if (a.DisplayName == "") != (b.DisplayName == "") {
			if a.DisplayName == "" {
				return 1
			}
			return -1
		}
		if c := strings.Compare(strings.ToLower(a.DisplayName), strings.ToLower(b.DisplayName)); c != 0 {
			return c
		}
		return strings.Compare(a.UserID, b.UserID)
	})
	limited := len(found) > limit
	out := make([]DirectoryUser, 0, min(len(found), limit))
	for _, m := range found[:min(len(found), limit)] {
		out = append(out, m.DirectoryUser)
	}
	return out, limited, nil
}

// allWordsIn reports whether each word is in id or in name.
func allWordsIn(words []string, id, name string) bool {
	for _, w := range words {
		if !strings.Contains(id, w) && !strings.Contains(name, w) {
			return false
		}
	}
	return true
}

// openMembers are the joined members of the rooms whose join rule is public or whose history is
// world_readable.
type openMembers struct {
	rooms   map[string]bool
	members []DirectoryUser
}

// directoryCache keeps the open rooms' members between searches (one per keystroke in a client's
// dialog) while no transaction of the serial path, which stores every state and member event,
// has committed since they were read. With another node writing (an external bus) nothing is
// kept: its commits do not pass here.
type directoryCache struct {
	mu   gosync.Mutex
	gen  int64 // Service.stateGen when open was read
	open *openMembers
}

// openRoomMembers returns the open rooms and their joined members, from the cache when no state
// changed since.
func (s *Service) openRoomMembers(ctx context.Context) (*openMembers, error) {
	alone := s.bus == nil || s.bus.Embedded()
	gen := s.stateGen.Load()
	dc := &s.directory
	if alone {
		dc.mu.Lock()
		defer dc.mu.Unlock()
		if dc.open != nil && dc.gen == gen {
			return dc.open, nil
		}
	}
	c := s.store.Read()
	states, err := c.StateOfTypeEverywhere(ctx, []string{TypeJoinRules, "m.room.history_visibility"})
	if err != nil {
		return nil, err
	}
	open := &openMembers{rooms: map[string]bool{}}
	var ids []string
	for _, e := range states {
		content := clientContent(e.ClientJSON)
		if (e.Type == TypeJoinRules && stringField(content, "join_rule") == JoinRulePublic ||
			e.Type == "m.room.history_visibility" && stringField(content, "history_visibility") == VisibilityWorldReadable) &&
			!open.rooms[e.RoomID] {
			open.rooms[e.RoomID] = true
			ids = append(ids, e.RoomID)
		}
	}
	events, err := c.JoinedMemberEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	open.members = membersOf(events)
	if alone {
		dc.gen, dc.open = gen, open
	}
	return open, nil
}

// membersOf takes the user ID, display name and avatar from member events.
func membersOf(events []storage.StateContent) []DirectoryUser {
	out := make([]DirectoryUser, 0, len(events))
	for _, e := range events {
		content := clientContent(e.ClientJSON)
		out = append(out, DirectoryUser{UserID: e.StateKey, DisplayName: stringField(content, "displayname"),
			AvatarURL: stringField(content, "avatar_url")})
	}
	return out
}
