package room

import (
	"context"
	"slices"
	"strings"
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
	c := s.store.Read()
	mine, err := c.RoomsOfUser(ctx, viewer, MembershipJoin)
	if err != nil {
		return nil, false, err
	}
	rooms := make([]string, 0, len(mine))
	for _, m := range mine {
		rooms = append(rooms, m.RoomID)
	}
	open, err := c.StateEventsOfType(ctx, []string{TypeJoinRules, "m.room.history_visibility"})
	if err != nil {
		return nil, false, err
	}
	for _, e := range open {
		content := contentOf(e)
		if e.Type == TypeJoinRules && stringField(content, "join_rule") == JoinRulePublic ||
			e.Type == "m.room.history_visibility" && stringField(content, "history_visibility") == VisibilityWorldReadable {
			rooms = append(rooms, e.RoomID)
		}
	}
	slices.Sort(rooms)
	rooms = slices.Compact(rooms)
	members, err := c.CurrentStateEvents(ctx, rooms, []string{TypeMember})
	if err != nil {
		return nil, false, err
	}
	type match struct {
		DirectoryUser
		rank int // 0: the display name or the user ID's localpart starts with the term
	}
	seen := map[string]bool{}
	var found []match
	for _, e := range members {
		if e.Membership != MembershipJoin || e.StateKey == nil || seen[*e.StateKey] {
			continue
		}
		userID := *e.StateKey
		content := contentOf(e)
		name, avatar := stringField(content, "displayname"), stringField(content, "avatar_url")
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
