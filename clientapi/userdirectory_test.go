package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// TestUserDirectory: a search finds, by user ID or display name, case-insensitively and with every
// word of the term, the joined members of the searcher's rooms and of public or world-readable
// rooms; nobody who is only in other private rooms, and nobody who left; limit and limited work;
// bad requests get the spec's errors.
func TestUserDirectory(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		must := func(what string, res servertest.Response) servertest.Response {
			t.Helper()
			want(t, what, res, 200, "")
			return res
		}
		users := map[string]servertest.User{}
		for _, u := range []struct{ name, display string }{
			{"alice", "Alice"}, {"bob", "Bobby Tables"}, {"carol", "Carol Danvers"}, {"dave", "Bob Secret"}, {"erin", "Erin Open"}, {"frank", ""},
		} {
			users[u.name] = s.Register(t, u.name, "password "+u.name)
			if u.display != "" {
				must("display name", s.Do(t, "PUT", "/_matrix/client/v3/profile/"+users[u.name].UserID+"/displayname",
					users[u.name].AccessToken, map[string]any{"displayname": u.display}))
			}
		}
		create := func(owner string, body map[string]any) string {
			t.Helper()
			return must("createRoom", s.Do(t, "POST", "/_matrix/client/v3/createRoom", users[owner].AccessToken, body)).Str("room_id")
		}
		join := func(who, roomID string) {
			t.Helper()
			must("join", s.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), users[who].AccessToken, map[string]any{}))
		}
		shared := create("alice", map[string]any{"preset": "private_chat", "invite": []string{users["bob"].UserID}})
		join("bob", shared)
		public := create("carol", map[string]any{"preset": "public_chat"})
		join("frank", public)
		create("dave", map[string]any{"preset": "private_chat"}) // nobody else can see dave
		create("erin", map[string]any{"preset": "private_chat", "initial_state": []any{map[string]any{
			"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})

		search := func(as, term string, limit int) ([]string, bool, map[string]string) {
			t.Helper()
			body := map[string]any{"search_term": term}
			if limit > 0 {
				body["limit"] = limit
			}
			res := s.Do(t, "POST", "/_matrix/client/v3/user_directory/search", users[as].AccessToken, body)
			var out struct {
				Results []struct {
					UserID      string `json:"user_id"`
					DisplayName string `json:"display_name"`
				} `json:"results"`
				Limited *bool `json:"limited"`
			}
			if res.Status != 200 || json.Unmarshal(res.Raw, &out) != nil || out.Results == nil || out.Limited == nil {
				t.Fatalf("search %q: %d %s", term, res.Status, res.Raw)
			}
			var ids []string
			names := map[string]string{}
			for _, r := range out.Results {
				ids = append(ids, r.UserID)
				names[r.UserID] = r.DisplayName
			}
			return ids, *out.Limited, names
		}
		id := func(name string) string { return users[name].UserID }
		for _, c := range []struct {
			term string
			want []string
		}{
			{"bob", []string{id("bob")}},          // dave's display name has "Bob" too, but alice cannot see him
			{"BOBBY tab", []string{id("bob")}},    // every word, any case, in the display name
			{"tables bobby", []string{id("bob")}}, // in any order
			{"carol", []string{id("carol")}},      // a member of a public room
			{"danvers", []string{id("carol")}},    // by display name
			{"erin", []string{id("erin")}},        // a member of a world-readable room
			{"frank", []string{id("frank")}},      // no display name: by user ID
			{"secret", nil},                       // dave is in no room alice can see
			{"@dave:", nil},                       // not by user ID either
			{"nobody-at-all", nil},                // nothing
			{"bobby carol", nil},                  // every word must match the same user
		} {
			got, limited, _ := search("alice", c.term, 0)
			if !slices.Equal(got, c.want) || limited {
				t.Errorf("search %q = %v (limited %v), want %v", c.term, got, limited, c.want)
			}
		}
		if _, _, names := search("alice", "bobby", 0); names[id("bob")] != "Bobby Tables" {
			t.Errorf("display name in the result: %v", names)
		}
		// Dave finds himself and the users of the public and world-readable rooms, not alice's room.
		if got, _, _ := search("dave", "bob", 0); !slices.Equal(got, []string{id("dave")}) {
			t.Errorf("dave's search for bob = %v, want only himself", got)
		}
		// Limit: "localhost" is in every user ID (alice sees alice, bob, carol, erin, frank).
		all, limited, _ := search("alice", "localhost", 0)
		if len(all) != 5 || limited {
			t.Fatalf("all visible users = %v (limited %v)", all, limited)
		}
		if got, limited, _ := search("alice", "localhost", 2); len(got) != 2 || !limited || !slices.Equal(got, all[:2]) {
			t.Errorf("limit 2 = %v (limited %v), want %v and limited", got, limited, all[:2])
		}
		// Ranking: a display name that starts with the term comes first.
		if got, _, _ := search("alice", "e", 0); len(got) == 0 || got[0] != id("erin") {
			t.Errorf("search e = %v, want erin first", got)
		}
		// What the search keeps between searches follows the rooms: a member who leaves a public
		// room, a new display name, a room that stops being public.
		must("frank leaves", s.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(public)+"/leave", users["frank"].AccessToken, map[string]any{}))
		if got, _, _ := search("alice", "frank", 0); len(got) != 0 {
			t.Errorf("frank left the public room but is still found: %v", got)
		}
		must("carol renames", s.Do(t, "PUT", "/_matrix/client/v3/profile/"+id("carol")+"/displayname", users["carol"].AccessToken,
			map[string]any{"displayname": "Captain Marvel"}))
		if got, _, _ := search("alice", "captain", 0); !slices.Equal(got, []string{id("carol")}) {
			t.Errorf("search for carol's new name = %v", got)
		}
		must("public room made invite-only", s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(public)+"/state/m.room.join_rules/",
			users["carol"].AccessToken, map[string]any{"join_rule": "invite"}))
		if got, _, _ := search("alice", "captain", 0); len(got) != 0 {
			t.Errorf("the room is no longer public but carol is still found: %v", got)
		}
		// Members who left are no longer found.
		must("leave", s.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(shared)+"/leave", users["bob"].AccessToken, map[string]any{}))
		if got, _, _ := search("alice", "bobby", 0); len(got) != 0 {
			t.Errorf("bob left the only shared room but is still found: %v", got)
		}

		path := "/_matrix/client/v3/user_directory/search"
		for _, c := range []struct {
			name, token string
			body        any
			status      int
			errcode     string
		}{
			{"no search term", users["alice"].AccessToken, map[string]any{"limit": 3}, 400, "M_MISSING_PARAM"},
			{"search term not a string", users["alice"].AccessToken, map[string]any{"search_term": 5}, 400, "M_BAD_JSON"},
			{"negative limit", users["alice"].AccessToken, map[string]any{"search_term": "a", "limit": -1}, 400, "M_INVALID_PARAM"},
			{"body not JSON", users["alice"].AccessToken, `{"search_term":`, 400, "M_NOT_JSON"},
			{"no token", "", map[string]any{"search_term": "a"}, 401, "M_MISSING_TOKEN"},
		} {
			t.Run(c.name, func(t *testing.T) {
				requireStatusErrcode(t, s.Do(t, "POST", path, c.token, c.body), c.status, c.errcode)
			})
		}
	})
}

// BenchmarkUserDirectory is one POST /user_directory/search on a server with 1,000 rooms (half of
// them public, each with its creator and one other member) by a user in none of the private
// ones: the search reads the join rule and history visibility of every room, then the members of
// the 500 public rooms.
//
//	go test ./clientapi -run '^$' -bench UserDirectory
func BenchmarkUserDirectory(b *testing.B) {
	forBackends(b, func(b *testing.B, s *servertest.Server) {
		ctx := context.Background()
		searcher := s.Register(b, "searcher", "password searcher")
		for i := range 1000 {
			preset := room.PresetPrivateChat
			if i%2 == 0 {
				preset = room.PresetPublicChat
			}
			creator := fmt.Sprintf("@creator%d:localhost", i)
			roomID, err := s.Rooms.CreateRoom(ctx, room.CreateRequest{Creator: creator, Preset: preset})
			if err != nil {
				b.Fatal(err)
			}
			if preset == room.PresetPublicChat {
				member := room.Sender{UserID: fmt.Sprintf("@member%d:localhost", i), Localpart: fmt.Sprintf("member%d", i)}
				if _, err := s.Rooms.Join(ctx, roomID, member, room.MemberProfile{DisplayName: fmt.Sprintf("Member %d", i)}, ""); err != nil {
					b.Fatal(err)
				}
			}
		}
		body := map[string]any{"search_term": "member 4", "limit": 10}
		b.ResetTimer()
		for b.Loop() {
			if res := s.Do(b, "POST", "/_matrix/client/v3/user_directory/search", searcher.AccessToken, body); res.Status != 200 {
				b.Fatalf("%d %s", res.Status, res.Raw)
			}
		}
	})
}
