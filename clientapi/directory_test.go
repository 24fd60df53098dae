package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// Tests of the directory area: aliases, the published room directory, forget, knock, upgrades,
// the space hierarchy and timestamp_to_event. Helpers carry a dir prefix.

const (
	dirV3 = "/_matrix/client/v3"
	dirV1 = "/_matrix/client/v1"
)

func dirEsc(s string) string { return url.PathEscape(s) }

func dirRoomPath(roomID, rest string) string { return dirV3 + "/rooms/" + dirEsc(roomID) + rest }

func dirAliasPath(alias string) string { return dirV3 + "/directory/room/" + dirEsc(alias) }

// dirCreate creates a room and returns its ID.
func dirCreate(t *testing.T, s *servertest.Server, u servertest.User, body map[string]any) string {
	t.Helper()
	res := s.Do(t, "POST", dirV3+"/createRoom", u.AccessToken, body)
	requireStatusErrcode(t, res, http.StatusOK, "")
	return res.Str("room_id")
}

// dirOK sends a request and fails the test unless it succeeds.
func dirOK(t *testing.T, s *servertest.Server, method, path string, u servertest.User, body any) servertest.Response {
	t.Helper()
	res := s.Do(t, method, path, u.AccessToken, body)
	if res.Status != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, res.Status, res.Raw)
	}
	return res
}

// dirFail sends a request and fails the test unless it gets the status and errcode.
func dirFail(t *testing.T, s *servertest.Server, method, path string, u servertest.User, body any, status int, errcode string) {
	t.Helper()
	res := s.Do(t, method, path, u.AccessToken, body)
	if res.Status != status || res.Errcode() != errcode {
		t.Fatalf("%s %s: got %d %s, want %d %s", method, path, res.Status, res.Raw, status, errcode)
	}
}

var dirTxn atomic.Int64

func dirSend(t *testing.T, s *servertest.Server, u servertest.User, roomID, body string) string {
	t.Helper()
	res := dirOK(t, s, "PUT", dirRoomPath(roomID, fmt.Sprintf("/send/m.room.message/dir%d", dirTxn.Add(1))), u,
		map[string]any{"msgtype": "m.text", "body": body})
	return res.Str("event_id")
}

func dirJoin(t *testing.T, s *servertest.Server, u servertest.User, roomID string) {
	t.Helper()
	dirOK(t, s, "POST", dirRoomPath(roomID, "/join"), u, map[string]any{})
}

// dirState reads one state event's content.
func dirState(t *testing.T, s *servertest.Server, u servertest.User, roomID, typ, key string) map[string]any {
	t.Helper()
	path := dirRoomPath(roomID, "/state/"+typ)
	if key != "" {
		path += "/" + dirEsc(key)
	}
	res := dirOK(t, s, "GET", path, u, nil)
	return res.JSON
}

// dirStateEvents reads a room's whole current state as events.
func dirStateEvents(t *testing.T, s *servertest.Server, u servertest.User, roomID string) []map[string]any {
	t.Helper()
	res := dirOK(t, s, "GET", dirRoomPath(roomID, "/state"), u, nil)
	var evs []map[string]any
	if err := json.Unmarshal(res.Raw, &evs); err != nil {
		t.Fatalf("state: %v %s", err, res.Raw)
	}
	return evs
}

func dirStateEvent(t *testing.T, evs []map[string]any, typ, key string) map[string]any {
	t.Helper()
	for _, e := range evs {
		if e["type"] == typ && e["state_key"] == key {
			return e
		}
	}
	t.Fatalf("no %s/%s in state", typ, key)
	return nil
}

func dirJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRoomAliases(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		admin := registerShared(t, s, "root", "root password", true)
		server := s.Config.ServerName
		roomID := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "room_alias_name": "canon"})
		alias := "#room1:" + server

		// PUT: success, then every refusal.
		requireJSON(t, s.Do(t, "PUT", dirAliasPath(alias), alice.AccessToken, map[string]any{"room_id": roomID}), `{}`)
		dirFail(t, s, "PUT", dirAliasPath(alias), alice, map[string]any{"room_id": roomID}, http.StatusConflict, "M_UNKNOWN")
		dirFail(t, s, "PUT", dirAliasPath("#room1:other.example"), alice, map[string]any{"room_id": roomID}, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "PUT", dirAliasPath("room1:"+server), alice, map[string]any{"room_id": roomID}, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "PUT", dirAliasPath("#has space:"+server), alice, map[string]any{"room_id": roomID}, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "PUT", dirAliasPath("#new:"+server), alice, map[string]any{"room_id": "!nope:" + server}, http.StatusNotFound, "M_NOT_FOUND")
		dirFail(t, s, "PUT", dirAliasPath("#new:"+server), alice, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		dirFail(t, s, "PUT", dirAliasPath("#new:"+server), alice, map[string]any{"room_id": "nope"}, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "PUT", dirAliasPath("#new:"+server), bob, map[string]any{"room_id": roomID}, http.StatusForbidden, "M_FORBIDDEN")

		// GET: any user.
		requireJSON(t, s.Do(t, "GET", dirAliasPath(alias), bob.AccessToken, nil), dirJSON(map[string]any{"room_id": roomID, "servers": []string{server}}))
		dirFail(t, s, "GET", dirAliasPath("#missing:"+server), bob, nil, http.StatusNotFound, "M_NOT_FOUND")
		dirFail(t, s, "GET", dirAliasPath("missing"), bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "GET", dirAliasPath("#x:other.example"), bob, nil, http.StatusNotFound, "M_NOT_FOUND")

		// /rooms/{roomId}/aliases: members only (the room is not world_readable), and admins.
		canon := "#canon:" + server
		requireJSON(t, s.Do(t, "GET", dirRoomPath(roomID, "/aliases"), alice.AccessToken, nil), dirJSON(map[string]any{"aliases": []string{canon, alias}}))
		dirFail(t, s, "GET", dirRoomPath(roomID, "/aliases"), bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		dirFail(t, s, "GET", dirRoomPath("!unknown:"+server, "/aliases"), bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		dirOK(t, s, "GET", dirRoomPath(roomID, "/aliases"), admin, nil)
		dirJoin(t, s, bob, roomID)
		requireJSON(t, s.Do(t, "GET", dirRoomPath(roomID, "/aliases"), bob.AccessToken, nil), dirJSON(map[string]any{"aliases": []string{canon, alias}}))

		// DELETE: bob (power 0) may not delete alice's alias; he may delete his own; alice (power
		// 100) and the admin may delete anyone's.
		dirFail(t, s, "DELETE", dirAliasPath(alias), bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		dirOK(t, s, "PUT", dirAliasPath("#bobs:"+server), bob, map[string]any{"room_id": roomID})
		dirOK(t, s, "DELETE", dirAliasPath("#bobs:"+server), bob, nil)
		dirFail(t, s, "GET", dirAliasPath("#bobs:"+server), bob, nil, http.StatusNotFound, "M_NOT_FOUND")
		dirOK(t, s, "PUT", dirAliasPath("#bobs2:"+server), bob, map[string]any{"room_id": roomID})
		dirOK(t, s, "DELETE", dirAliasPath("#bobs2:"+server), alice, nil)
		dirOK(t, s, "PUT", dirAliasPath("#bobs3:"+server), bob, map[string]any{"room_id": roomID})
		dirOK(t, s, "DELETE", dirAliasPath("#bobs3:"+server), admin, nil)
		dirFail(t, s, "DELETE", dirAliasPath("#bobs3:"+server), admin, nil, http.StatusNotFound, "M_NOT_FOUND")
		dirFail(t, s, "DELETE", dirAliasPath("bad"), admin, nil, http.StatusBadRequest, "M_INVALID_PARAM")

		// Deleting the canonical alias takes it out of m.room.canonical_alias.
		if got := dirState(t, s, alice, roomID, "m.room.canonical_alias", ""); got["alias"] != canon {
			t.Fatalf("canonical alias before delete: %v", got)
		}
		dirOK(t, s, "DELETE", dirAliasPath(canon), alice, nil)
		if got := dirState(t, s, alice, roomID, "m.room.canonical_alias", ""); got["alias"] != nil {
			t.Fatalf("canonical alias after delete: %v", got)
		}
		requireJSON(t, s.Do(t, "GET", dirRoomPath(roomID, "/aliases"), alice.AccessToken, nil), dirJSON(map[string]any{"aliases": []string{alias}}))

		// A world_readable room's aliases are open to anyone.
		dirOK(t, s, "PUT", dirRoomPath(roomID, "/state/m.room.history_visibility"), alice, map[string]any{"history_visibility": "world_readable"})
		requireJSON(t, s.Do(t, "GET", dirRoomPath(roomID, "/aliases"), carol.AccessToken, nil), dirJSON(map[string]any{"aliases": []string{alias}}))
	})
}

func TestDirectoryVisibility(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		admin := registerShared(t, s, "root", "root password", true)
		roomID := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "name": "Listed"})
		path := dirV3 + "/directory/list/room/" + dirEsc(roomID)
		listed := func() bool {
			res := dirOK(t, s, "GET", dirV3+"/publicRooms", bob, nil)
			return strings.Contains(string(res.Raw), roomID)
		}

		requireJSON(t, s.Do(t, "GET", path, bob.AccessToken, nil), `{"visibility":"private"}`)
		if listed() {
			t.Fatal("private room listed")
		}
		dirFail(t, s, "PUT", path, bob, map[string]any{"visibility": "public"}, http.StatusForbidden, "M_FORBIDDEN")
		dirJoin(t, s, bob, roomID) // joined with power 0: still not allowed
		dirFail(t, s, "PUT", path, bob, map[string]any{"visibility": "public"}, http.StatusForbidden, "M_FORBIDDEN")
		dirFail(t, s, "PUT", path, alice, map[string]any{"visibility": "secret"}, http.StatusBadRequest, "M_INVALID_PARAM")
		requireJSON(t, s.Do(t, "PUT", path, alice.AccessToken, map[string]any{}), `{}`) // default: public
		requireJSON(t, s.Do(t, "GET", path, bob.AccessToken, nil), `{"visibility":"public"}`)
		if !listed() {
			t.Fatal("published room not listed")
		}
		requireJSON(t, s.Do(t, "PUT", path, admin.AccessToken, map[string]any{"visibility": "private"}), `{}`)
		requireJSON(t, s.Do(t, "GET", path, bob.AccessToken, nil), `{"visibility":"private"}`)
		if listed() {
			t.Fatal("unpublished room listed")
		}
		unknown := dirV3 + "/directory/list/room/" + dirEsc("!unknown:"+s.Config.ServerName)
		dirFail(t, s, "GET", unknown, bob, nil, http.StatusNotFound, "M_NOT_FOUND")
		dirFail(t, s, "PUT", unknown, admin, map[string]any{"visibility": "public"}, http.StatusNotFound, "M_NOT_FOUND")
	})
}

// dirPublicPage is a decoded /publicRooms response.
type dirPublicPage struct {
	Chunk []struct {
		RoomID           string `json:"room_id"`
		Name             string `json:"name"`
		Topic            string `json:"topic"`
		CanonicalAlias   string `json:"canonical_alias"`
		NumJoinedMembers int    `json:"num_joined_members"`
		WorldReadable    bool   `json:"world_readable"`
		GuestCanJoin     bool   `json:"guest_can_join"`
		JoinRule         string `json:"join_rule"`
		AvatarURL        string `json:"avatar_url"`
		RoomType         string `json:"room_type"`
	} `json:"chunk"`
	NextBatch string `json:"next_batch"`
	PrevBatch string `json:"prev_batch"`
	Total     int    `json:"total_room_count_estimate"`
}

func (p dirPublicPage) ids() []string {
	var out []string
	for _, c := range p.Chunk {
		out = append(out, c.RoomID)
	}
	return out
}

func TestPublicRooms(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		server := s.Config.ServerName
		public := func(body map[string]any) string {
			body["visibility"] = "public"
			return dirCreate(t, s, alice, body)
		}
		cheese := public(map[string]any{"name": "Cheese Lovers", "topic": "Tasty", "initial_state": []any{
			map[string]any{"type": "m.room.avatar", "content": map[string]any{"url": "mxc://" + server + "/cheese"}},
			map[string]any{"type": "m.room.guest_access", "content": map[string]any{"guest_access": "can_join"}},
			map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "world_readable"}},
		}})
		makers := public(map[string]any{"name": "CHEESE makers"})
		wine := public(map[string]any{"name": "Wine", "topic": "Goes with cHeEse"})
		cheesy := public(map[string]any{"name": "Bread", "room_alias_name": "cheeselab"})
		space := public(map[string]any{"name": "Food space", "creation_content": map[string]any{"type": "m.space"}})
		plain := public(map[string]any{"name": "Plain"})
		dirCreate(t, s, alice, map[string]any{"name": "Private cheese"}) // not published
		dirJoin(t, s, bob, cheese)
		all := []string{cheese, makers, wine, cheesy, space, plain}

		decode := func(res servertest.Response) dirPublicPage {
			t.Helper()
			var p dirPublicPage
			if res.Status != http.StatusOK || json.Unmarshal(res.Raw, &p) != nil {
				t.Fatalf("publicRooms: %d %s", res.Status, res.Raw)
			}
			return p
		}
		sorted := func(ids []string) []string {
			out := slices.Clone(ids)
			sort.Strings(out)
			return out
		}

		// Everything published, with the fields read from the current state.
		p := decode(s.Do(t, "GET", dirV3+"/publicRooms", bob.AccessToken, nil))
		if !slices.Equal(sorted(p.ids()), sorted(all)) || p.Total != len(all) || p.NextBatch != "" || p.PrevBatch != "" {
			t.Fatalf("publicRooms: %+v, want %v", p, all)
		}
		for _, c := range p.Chunk {
			switch c.RoomID {
			case cheese:
				if c.Name != "Cheese Lovers" || c.Topic != "Tasty" || c.NumJoinedMembers != 2 || !c.WorldReadable || !c.GuestCanJoin ||
					c.JoinRule != "public" || c.AvatarURL != "mxc://"+server+"/cheese" || c.RoomType != "" {
					t.Fatalf("cheese chunk: %+v", c)
				}
			case cheesy:
				if c.CanonicalAlias != "#cheeselab:"+server || c.NumJoinedMembers != 1 || c.WorldReadable || c.GuestCanJoin {
					t.Fatalf("cheesy chunk: %+v", c)
				}
			case space:
				if c.RoomType != "m.space" {
					t.Fatalf("space chunk: %+v", c)
				}
			}
		}
		// The raw chunk carries the required fields even when false.
		for _, key := range []string{`"world_readable":false`, `"guest_can_join":false`, `"num_joined_members":1`} {
			if !strings.Contains(string(s.Do(t, "GET", dirV3+"/publicRooms", bob.AccessToken, nil).Raw), key) {
				t.Fatalf("publicRooms lacks %s", key)
			}
		}

		// Case-insensitive search over name, topic and canonical alias.
		p = decode(s.Do(t, "POST", dirV3+"/publicRooms", bob.AccessToken, map[string]any{"filter": map[string]any{"generic_search_term": "cHEESe"}}))
		if got, want := sorted(p.ids()), sorted([]string{cheese, makers, wine, cheesy}); !slices.Equal(got, want) || p.Total != 4 {
			t.Fatalf("search: got %v, want %v", got, want)
		}
		p = decode(s.Do(t, "POST", dirV3+"/publicRooms", bob.AccessToken, map[string]any{"filter": map[string]any{"generic_search_term": "no such room"}}))
		if len(p.Chunk) != 0 {
			t.Fatalf("search without match: %v", p.ids())
		}
		// Room types: only spaces, or only rooms without a type.
		p = decode(s.Do(t, "POST", dirV3+"/publicRooms", bob.AccessToken, map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}}))
		if !slices.Equal(p.ids(), []string{space}) {
			t.Fatalf("room_types [m.space]: %v", p.ids())
		}
		p = decode(s.Do(t, "POST", dirV3+"/publicRooms", bob.AccessToken, map[string]any{"filter": map[string]any{"room_types": []any{nil}}}))
		if len(p.Chunk) != len(all)-1 || slices.Contains(p.ids(), space) {
			t.Fatalf("room_types [null]: %v", p.ids())
		}

		// Pagination forward with every limit, GET and POST: each room exactly once; then back.
		for limit := 1; limit <= len(all)+1; limit++ {
			var seen []string
			var pages []dirPublicPage
			since := ""
			for i := 0; ; i++ {
				if i > len(all)+1 {
					t.Fatalf("limit %d: pagination does not end", limit)
				}
				var res servertest.Response
				if i%2 == 0 {
					q := fmt.Sprintf("?limit=%d", limit)
					if since != "" {
						q += "&since=" + url.QueryEscape(since)
					}
					res = s.Do(t, "GET", dirV3+"/publicRooms"+q, bob.AccessToken, nil)
				} else {
					res = s.Do(t, "POST", dirV3+"/publicRooms", bob.AccessToken, map[string]any{"limit": limit, "since": since})
				}
				p := decode(res)
				if len(p.Chunk) > limit || (i == 0) != (p.PrevBatch == "") {
					t.Fatalf("limit %d page %d: %+v", limit, i, p)
				}
				pages = append(pages, p)
				seen = append(seen, p.ids()...)
				if p.NextBatch == "" {
					break
				}
				since = p.NextBatch
			}
			if !slices.Equal(sorted(seen), sorted(all)) {
				t.Fatalf("limit %d: paginated %v, want each of %v once", limit, seen, all)
			}
			for i := len(pages) - 1; i > 0; i-- {
				back := decode(s.Do(t, "POST", dirV3+"/publicRooms", bob.AccessToken, map[string]any{"limit": limit, "since": pages[i].PrevBatch}))
				if !slices.Equal(back.ids(), pages[i-1].ids()) {
					t.Fatalf("limit %d: prev_batch of page %d gave %v, want %v", limit, i, back.ids(), pages[i-1].ids())
				}
			}
		}

		// The server parameter and bad input.
		dirOK(t, s, "GET", dirV3+"/publicRooms?server="+server, bob, nil)
		// Another server's directory is asked over federation (federation/directory_test.go); one
		// that cannot be reached (loopback is not allowed to federation here) gives 502.
		dirFail(t, s, "GET", dirV3+"/publicRooms?server=127.0.0.1:1", bob, nil, http.StatusBadGateway, "M_UNKNOWN")
		dirFail(t, s, "POST", dirV3+"/publicRooms?server=bad%20name", bob, map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "GET", dirV3+"/publicRooms?since=garbage", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "GET", dirV3+"/publicRooms?limit=-1", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "POST", dirV3+"/publicRooms", bob, map[string]any{"limit": -1}, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "POST", dirV3+"/publicRooms", bob, map[string]any{"include_all_networks": true, "third_party_instance_id": "irc"},
			http.StatusBadRequest, "M_INVALID_PARAM")
		p = decode(s.Do(t, "POST", dirV3+"/publicRooms", bob.AccessToken, map[string]any{"third_party_instance_id": "irc"}))
		if len(p.Chunk) != 0 {
			t.Fatalf("third-party network listed our rooms: %v", p.ids())
		}

		// A room nobody is joined to any more leaves the list.
		dirOK(t, s, "POST", dirRoomPath(plain, "/leave"), alice, map[string]any{})
		p = decode(s.Do(t, "GET", dirV3+"/publicRooms", bob.AccessToken, nil))
		if slices.Contains(p.ids(), plain) {
			t.Fatalf("empty room still listed: %v", p.ids())
		}
	})
}

func TestForgetRoom(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		ctx := context.Background()
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		roomID := dirCreate(t, s, alice, map[string]any{"preset": "public_chat"})
		other := dirCreate(t, s, alice, map[string]any{"preset": "public_chat"})
		dirJoin(t, s, bob, roomID)
		dirJoin(t, s, bob, other)

		dirFail(t, s, "POST", dirRoomPath(roomID, "/forget"), bob, map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")
		dirOK(t, s, "POST", dirRoomPath(roomID, "/leave"), bob, map[string]any{})
		dirOK(t, s, "POST", dirRoomPath(other, "/leave"), bob, map[string]any{})
		left, err := s.Rooms.RememberedRooms(ctx, bob.UserID, "leave")
		if err != nil || len(left) != 2 {
			t.Fatalf("left rooms before forget: %v %v", left, err)
		}
		requireJSON(t, s.Do(t, "POST", dirRoomPath(roomID, "/forget"), bob.AccessToken, map[string]any{}), `{}`)
		requireJSON(t, s.Do(t, "POST", dirRoomPath(roomID, "/forget"), bob.AccessToken, map[string]any{}), `{}`) // twice is fine
		left, err = s.Rooms.RememberedRooms(ctx, bob.UserID, "leave", "join")
		if err != nil || !slices.Equal(left, []string{other}) {
			t.Fatalf("rooms after forget: %v %v, want only %s", left, err, other)
		}
		if f, _ := s.Rooms.Forgotten(ctx, roomID, bob.UserID); !f {
			t.Fatal("room not forgotten")
		}
		requireJSON(t, s.Do(t, "GET", dirV3+"/joined_rooms", bob.AccessToken, nil), `{"joined_rooms":[]}`)

		// Joining again brings the room back.
		dirJoin(t, s, bob, roomID)
		left, _ = s.Rooms.RememberedRooms(ctx, bob.UserID, "leave", "join")
		if !slices.Contains(left, roomID) {
			t.Fatalf("rejoined room missing: %v", left)
		}
		if f, _ := s.Rooms.Forgotten(ctx, roomID, bob.UserID); f {
			t.Fatal("rejoined room still forgotten")
		}
		dirFail(t, s, "POST", dirRoomPath(roomID, "/forget"), bob, map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")
		// A banned user may forget; alice (joined) may not.
		dirOK(t, s, "POST", dirRoomPath(roomID, "/ban"), alice, map[string]any{"user_id": bob.UserID})
		dirOK(t, s, "POST", dirRoomPath(roomID, "/forget"), bob, map[string]any{})
		dirFail(t, s, "POST", dirRoomPath(roomID, "/forget"), alice, map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")
		dirFail(t, s, "POST", dirV3+"/rooms/notaroom/forget", alice, map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestKnock(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		server := s.Config.ServerName
		knockRule := []any{map[string]any{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}}}
		roomID := dirCreate(t, s, alice, map[string]any{"room_version": "10", "initial_state": knockRule, "room_alias_name": "knocky"})

		// Knock by ID, with a reason; alice sees it, invites bob, bob joins.
		requireJSON(t, s.Do(t, "POST", dirV3+"/knock/"+dirEsc(roomID), bob.AccessToken, map[string]any{"reason": "let me in"}),
			dirJSON(map[string]string{"room_id": roomID}))
		m := dirState(t, s, alice, roomID, "m.room.member", bob.UserID)
		if m["membership"] != "knock" || m["reason"] != "let me in" || m["displayname"] != "bob" {
			t.Fatalf("knock event: %v", m)
		}
		dirFail(t, s, "POST", dirRoomPath(roomID, "/join"), bob, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		dirOK(t, s, "POST", dirRoomPath(roomID, "/invite"), alice, map[string]any{"user_id": bob.UserID})
		dirJoin(t, s, bob, roomID)
		res := dirOK(t, s, "GET", dirV3+"/joined_rooms", bob, nil)
		if !strings.Contains(string(res.Raw), roomID) {
			t.Fatalf("bob not joined after knock and invite: %s", res.Raw)
		}
		// Knocking again while joined is refused by the auth rules.
		dirFail(t, s, "POST", dirV3+"/knock/"+dirEsc(roomID), bob, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")

		// Knock by alias, without a body.
		requireJSON(t, s.Do(t, "POST", dirV3+"/knock/"+dirEsc("#knocky:"+server), carol.AccessToken, nil), dirJSON(map[string]string{"room_id": roomID}))

		// knock_restricted (v10+) accepts knocks.
		kr := dirCreate(t, s, alice, map[string]any{"room_version": "10", "initial_state": []any{map[string]any{"type": "m.room.join_rules",
			"content": map[string]any{"join_rule": "knock_restricted", "allow": []any{}}}}})
		dirOK(t, s, "POST", dirV3+"/knock/"+dirEsc(kr), carol, map[string]any{})

		// Refusals: a public room, a room version before knocking, unknown rooms and aliases, bad IDs.
		public := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "room_version": "10"})
		dirFail(t, s, "POST", dirV3+"/knock/"+dirEsc(public), carol, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		old := dirCreate(t, s, alice, map[string]any{"room_version": "6", "initial_state": knockRule})
		dirFail(t, s, "POST", dirV3+"/knock/"+dirEsc(old), carol, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		dirFail(t, s, "POST", dirV3+"/knock/"+dirEsc("!unknown:"+server), carol, map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
		dirFail(t, s, "POST", dirV3+"/knock/"+dirEsc("#unknown:"+server), carol, map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
		dirFail(t, s, "POST", dirV3+"/knock/nonsense", carol, map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
		// A banned user may not knock.
		dirOK(t, s, "POST", dirRoomPath(roomID, "/ban"), alice, map[string]any{"user_id": carol.UserID})
		dirFail(t, s, "POST", dirV3+"/knock/"+dirEsc(roomID), carol, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestRoomUpgrade(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		dave := s.Register(t, "dave", "dave password")
		server := s.Config.ServerName
		alias := "#up:" + server
		oldID := dirCreate(t, s, alice, map[string]any{
			"visibility": "public", "preset": "public_chat", "room_version": "10", "room_alias_name": "up",
			"name": "Upgrade me", "topic": "Before", "power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 50}},
			"initial_state": []any{
				map[string]any{"type": "m.room.avatar", "content": map[string]any{"url": "mxc://" + server + "/av"}},
				map[string]any{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
				map[string]any{"type": "m.room.server_acl", "content": map[string]any{"allow": []any{"*"}, "deny": []any{"evil.example"}}},
				map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}},
			},
		})
		dirOK(t, s, "PUT", dirAliasPath("#up-alt:"+server), alice, map[string]any{"room_id": oldID})
		dirJoin(t, s, bob, oldID)
		dirJoin(t, s, dave, oldID)
		dirOK(t, s, "POST", dirRoomPath(oldID, "/ban"), alice, map[string]any{"user_id": carol.UserID})
		upgrade := func(u servertest.User, roomID string, body any) servertest.Response {
			return s.Do(t, "POST", dirRoomPath(roomID, "/upgrade"), u.AccessToken, body)
		}

		// Refusals.
		requireStatusErrcode(t, upgrade(bob, oldID, map[string]any{"new_version": "11"}), http.StatusForbidden, "M_FORBIDDEN")
		requireStatusErrcode(t, upgrade(carol, oldID, map[string]any{"new_version": "11"}), http.StatusForbidden, "M_FORBIDDEN")
		requireStatusErrcode(t, upgrade(alice, oldID, map[string]any{"new_version": "999"}), http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
		requireStatusErrcode(t, upgrade(alice, oldID, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		requireStatusErrcode(t, upgrade(alice, oldID, map[string]any{"new_version": 11}), http.StatusBadRequest, "M_BAD_JSON")
		requireStatusErrcode(t, upgrade(alice, oldID, map[string]any{"new_version": "11", "additional_creators": []string{"nope"}}),
			http.StatusBadRequest, "M_INVALID_PARAM")
		requireStatusErrcode(t, upgrade(alice, "!unknown:"+server, map[string]any{"new_version": "11"}), http.StatusNotFound, "M_NOT_FOUND")

		res := upgrade(alice, oldID, map[string]any{"new_version": "11"})
		requireStatusErrcode(t, res, http.StatusOK, "")
		newID := res.Str("replacement_room")
		if !strings.HasPrefix(newID, "!") || newID == oldID {
			t.Fatalf("replacement_room %q", newID)
		}

		// The old room: tombstone, restricted power levels, no aliases, unpublished.
		oldState := dirStateEvents(t, s, alice, oldID)
		tomb := dirStateEvent(t, oldState, "m.room.tombstone", "")
		if c := tomb["content"].(map[string]any); c["replacement_room"] != newID || c["body"] == "" {
			t.Fatalf("tombstone: %v", tomb)
		}
		pl := dirStateEvent(t, oldState, "m.room.power_levels", "")["content"].(map[string]any)
		if pl["events_default"] != 50.0 || pl["invite"] != 50.0 {
			t.Fatalf("old room power levels not restricted: %v", pl)
		}
		if c := dirStateEvent(t, oldState, "m.room.canonical_alias", "")["content"].(map[string]any); len(c) != 0 {
			t.Fatalf("old canonical alias not cleared: %v", c)
		}
		requireJSON(t, s.Do(t, "GET", dirRoomPath(oldID, "/aliases"), alice.AccessToken, nil), `{"aliases":[]}`)
		requireJSON(t, s.Do(t, "GET", dirV3+"/directory/list/room/"+dirEsc(oldID), alice.AccessToken, nil), `{"visibility":"private"}`)
		dirFail(t, s, "PUT", dirRoomPath(oldID, "/send/m.room.message/after"), dave, map[string]any{"msgtype": "m.text", "body": "x"},
			http.StatusForbidden, "M_FORBIDDEN")

		// The new room: predecessor, copied state, aliases, published.
		newState := dirStateEvents(t, s, alice, newID)
		create := dirStateEvent(t, newState, "m.room.create", "")["content"].(map[string]any)
		pred, _ := create["predecessor"].(map[string]any)
		if create["room_version"] != "11" || pred["room_id"] != oldID || pred["event_id"] != tomb["event_id"] {
			t.Fatalf("create content %v, tombstone %v", create, tomb["event_id"])
		}
		for _, c := range []struct{ typ, key, want string }{
			{"m.room.name", "name", "Upgrade me"},
			{"m.room.topic", "topic", "Before"},
			{"m.room.avatar", "url", "mxc://" + server + "/av"},
			{"m.room.encryption", "algorithm", "m.megolm.v1.aes-sha2"},
			{"m.room.join_rules", "join_rule", "public"},
			{"m.room.history_visibility", "history_visibility", "joined"},
			{"m.room.guest_access", "guest_access", "forbidden"},
			{"m.room.canonical_alias", "alias", alias},
		} {
			if got := dirStateEvent(t, newState, c.typ, "")["content"].(map[string]any)[c.key]; got != c.want {
				t.Fatalf("%s.%s in the new room: %v, want %v", c.typ, c.key, got, c.want)
			}
		}
		acl := dirStateEvent(t, newState, "m.room.server_acl", "")["content"].(map[string]any)
		if dirJSON(acl["deny"]) != `["evil.example"]` {
			t.Fatalf("server ACL: %v", acl)
		}
		newPL := dirStateEvent(t, newState, "m.room.power_levels", "")["content"].(map[string]any)
		users := newPL["users"].(map[string]any)
		if users[alice.UserID] != 100.0 || users[bob.UserID] != 50.0 || newPL["events_default"] != 0.0 {
			t.Fatalf("new power levels: %v", newPL)
		}
		if m := dirStateEvent(t, newState, "m.room.member", carol.UserID)["content"].(map[string]any); m["membership"] != "ban" {
			t.Fatalf("ban not copied: %v", m)
		}
		requireJSON(t, s.Do(t, "GET", dirAliasPath(alias), bob.AccessToken, nil), dirJSON(map[string]any{"room_id": newID, "servers": []string{server}}))
		requireJSON(t, s.Do(t, "GET", dirAliasPath("#up-alt:"+server), bob.AccessToken, nil), dirJSON(map[string]any{"room_id": newID, "servers": []string{server}}))
		requireJSON(t, s.Do(t, "GET", dirV3+"/directory/list/room/"+dirEsc(newID), alice.AccessToken, nil), `{"visibility":"public"}`)

		// Members of the old room join the new one; the banned user may not.
		dirJoin(t, s, bob, newID)
		dirJoin(t, s, dave, newID)
		dirSend(t, s, dave, newID, "hello in the new room")
		dirFail(t, s, "POST", dirRoomPath(newID, "/join"), carol, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")

		// Upgrade again to v12: the room ID comes from the create event, the predecessor has no
		// event ID, and the upgrading creator is not listed in users.
		res = upgrade(alice, newID, map[string]any{"new_version": "12", "additional_creators": []string{dave.UserID}})
		requireStatusErrcode(t, res, http.StatusOK, "")
		v12 := res.Str("replacement_room")
		v12State := dirStateEvents(t, s, alice, v12)
		createEv := dirStateEvent(t, v12State, "m.room.create", "")
		create = createEv["content"].(map[string]any)
		pred, _ = create["predecessor"].(map[string]any)
		if create["room_version"] != "12" || pred["room_id"] != newID || pred["event_id"] != nil || "!"+createEv["event_id"].(string)[1:] != v12 ||
			dirJSON(create["additional_creators"]) != dirJSON([]string{dave.UserID}) {
			t.Fatalf("v12 create %v in %s", createEv, v12)
		}
		users = dirStateEvent(t, v12State, "m.room.power_levels", "")["content"].(map[string]any)["users"].(map[string]any)
		if _, ok := users[alice.UserID]; ok || users[bob.UserID] != 50.0 {
			t.Fatalf("v12 power level users: %v", users)
		}
		if c := dirStateEvent(t, dirStateEvents(t, s, alice, newID), "m.room.tombstone", "")["content"].(map[string]any); c["replacement_room"] != v12 {
			t.Fatalf("v11 tombstone: %v", c)
		}
		requireJSON(t, s.Do(t, "GET", dirAliasPath(alias), bob.AccessToken, nil), dirJSON(map[string]any{"room_id": v12, "servers": []string{server}}))
		dirOK(t, s, "PUT", dirRoomPath(v12, "/state/m.room.topic"), alice, map[string]any{"topic": "After"})
		dirJoin(t, s, bob, v12)
	})
}

// dirHierarchy is a decoded /hierarchy response.
type dirHierarchy struct {
	Rooms []struct {
		RoomID           string           `json:"room_id"`
		Name             string           `json:"name"`
		RoomType         string           `json:"room_type"`
		JoinRule         string           `json:"join_rule"`
		NumJoinedMembers int              `json:"num_joined_members"`
		RoomVersion      string           `json:"room_version"`
		ChildrenState    []map[string]any `json:"children_state"`
	} `json:"rooms"`
	NextBatch string `json:"next_batch"`
}

func (h dirHierarchy) ids() []string {
	var out []string
	for _, r := range h.Rooms {
		out = append(out, r.RoomID)
	}
	return out
}

func TestSpaceHierarchy(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		server := s.Config.ServerName
		space := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "name": "Space", "creation_content": map[string]any{"type": "m.space"}})
		roomA := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "name": "A"})
		roomB := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "name": "B"})
		private := dirCreate(t, s, alice, map[string]any{"preset": "private_chat", "name": "Private"})
		sub := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "name": "Sub", "creation_content": map[string]any{"type": "m.space"}})
		roomC := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "name": "C"})
		via := []string{server}
		child := func(parent, id string, content map[string]any) {
			dirOK(t, s, "PUT", dirRoomPath(parent, "/state/m.space.child/"+dirEsc(id)), alice, content)
		}
		child(space, roomA, map[string]any{"via": via, "suggested": true, "order": "b"})
		child(space, roomB, map[string]any{"via": via, "order": "a"})
		child(space, private, map[string]any{"via": via})
		child(space, sub, map[string]any{"via": via, "order": "c"})
		child(space, "!elsewhere:127.0.0.1:1", map[string]any{"via": []string{"127.0.0.1:1"}}) // unknown, its server unreachable: skipped
		child(space, "!gone:"+server, map[string]any{})                                        // no via: not a child
		child(sub, roomC, map[string]any{"via": via})
		child(sub, space, map[string]any{"via": via})   // a loop
		child(roomA, roomC, map[string]any{"via": via}) // not a space: not walked

		get := func(u servertest.User, query string) dirHierarchy {
			t.Helper()
			res := s.Do(t, "GET", dirV1+"/rooms/"+dirEsc(space)+"/hierarchy"+query, u.AccessToken, nil)
			var h dirHierarchy
			if res.Status != http.StatusOK || json.Unmarshal(res.Raw, &h) != nil {
				t.Fatalf("hierarchy%s: %d %s", query, res.Status, res.Raw)
			}
			return h
		}

		// bob sees the public rooms, depth first in the spec's child order.
		h := get(bob, "")
		if want := []string{space, roomB, roomA, sub, roomC}; !slices.Equal(h.ids(), want) || h.NextBatch != "" {
			t.Fatalf("hierarchy: %v, want %v", h.ids(), want)
		}
		root := h.Rooms[0]
		if root.RoomType != "m.space" || root.Name != "Space" || root.JoinRule != "public" || root.NumJoinedMembers != 1 || root.RoomVersion == "" {
			t.Fatalf("space summary: %+v", root)
		}
		var children []string
		for _, c := range root.ChildrenState {
			if c["type"] != "m.space.child" || c["sender"] != alice.UserID || c["origin_server_ts"] == nil || c["content"] == nil {
				t.Fatalf("child state %v", c)
			}
			children = append(children, c["state_key"].(string))
		}
		if want := []string{roomB, roomA, sub, private, "!elsewhere:127.0.0.1:1"}; !slices.Equal(children, want) {
			t.Fatalf("children_state %v, want %v", children, want)
		}
		if len(h.Rooms[1].ChildrenState) != 0 || h.Rooms[1].ChildrenState == nil {
			t.Fatalf("room children_state: %v", h.Rooms[1].ChildrenState)
		}
		// alice also sees the private room she is in.
		if want := []string{space, roomB, roomA, sub, roomC, private}; !slices.Equal(get(alice, "").ids(), want) {
			t.Fatalf("alice's hierarchy: %v", get(alice, "").ids())
		}
		// suggested_only and max_depth.
		if h := get(bob, "?suggested_only=true"); !slices.Equal(h.ids(), []string{space, roomA}) || len(h.Rooms[0].ChildrenState) != 1 {
			t.Fatalf("suggested only: %v", h.ids())
		}
		if h := get(bob, "?max_depth=0"); !slices.Equal(h.ids(), []string{space}) {
			t.Fatalf("max_depth 0: %v", h.ids())
		}
		if h := get(bob, "?max_depth=1"); !slices.Equal(h.ids(), []string{space, roomB, roomA, sub}) {
			t.Fatalf("max_depth 1: %v", h.ids())
		}
		// Pages of one room, without repeats.
		var paged []string
		from := ""
		for i := 0; ; i++ {
			q := "?limit=2"
			if from != "" {
				q += "&from=" + url.QueryEscape(from)
			}
			h := get(bob, q)
			if len(h.Rooms) > 2 || i > 5 {
				t.Fatalf("page %d: %v", i, h.ids())
			}
			paged = append(paged, h.ids()...)
			if h.NextBatch == "" {
				break
			}
			from = h.NextBatch
			if i == 0 {
				dirFail(t, s, "GET", dirV1+"/rooms/"+dirEsc(space)+"/hierarchy?suggested_only=true&from="+url.QueryEscape(from), bob, nil,
					http.StatusBadRequest, "M_INVALID_PARAM")
				dirFail(t, s, "GET", dirV1+"/rooms/"+dirEsc(roomA)+"/hierarchy?from="+url.QueryEscape(from), bob, nil,
					http.StatusBadRequest, "M_INVALID_PARAM")
			}
		}
		if want := []string{space, roomB, roomA, sub, roomC}; !slices.Equal(paged, want) {
			t.Fatalf("paged: %v, want %v", paged, want)
		}

		// Refusals.
		path := dirV1 + "/rooms/" + dirEsc(space) + "/hierarchy"
		dirFail(t, s, "GET", path+"?limit=0", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "GET", path+"?max_depth=-1", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "GET", path+"?suggested_only=maybe", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "GET", path+"?from=garbage", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "GET", dirV1+"/rooms/"+dirEsc(private)+"/hierarchy", bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		dirFail(t, s, "GET", dirV1+"/rooms/"+dirEsc("!unknown:"+server)+"/hierarchy", bob, nil, http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestTimestampToEvent(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		roomID := dirCreate(t, s, alice, map[string]any{"preset": "public_chat", "initial_state": []any{
			map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}}}})
		var before []string
		for i := 0; i < 5; i++ {
			before = append(before, dirSend(t, s, alice, roomID, fmt.Sprintf("before %d", i)))
		}
		dirJoin(t, s, bob, roomID)
		for i := 0; i < 5; i++ {
			dirSend(t, s, alice, roomID, fmt.Sprintf("after %d", i))
		}
		lookup := func(u servertest.User, ts int64, dir string) servertest.Response {
			return s.Do(t, "GET", fmt.Sprintf("%s/rooms/%s/timestamp_to_event?ts=%d&dir=%s", dirV1, dirEsc(roomID), ts, dir), u.AccessToken, nil)
		}

		// The oracle: the room's timeline as each user sees it, oldest first.
		type ev struct {
			id string
			ts int64
		}
		timeline := func(u servertest.User) []ev {
			res := dirOK(t, s, "GET", dirRoomPath(roomID, "/messages?dir=f&limit=1000"), u, nil)
			var page struct {
				Chunk []struct {
					EventID string `json:"event_id"`
					TS      int64  `json:"origin_server_ts"`
				} `json:"chunk"`
			}
			if err := json.Unmarshal(res.Raw, &page); err != nil {
				t.Fatal(err)
			}
			var out []ev
			for _, c := range page.Chunk {
				out = append(out, ev{c.EventID, c.TS})
			}
			// Timestamp order, stable in stream order for equal timestamps.
			sort.SliceStable(out, func(i, j int) bool { return out[i].ts < out[j].ts })
			return out
		}
		expect := func(u servertest.User, evs []ev, ts int64, dir string) {
			t.Helper()
			var want *ev
			if dir == "f" {
				for i := range evs {
					if evs[i].ts >= ts {
						want = &evs[i]
						break
					}
				}
			} else {
				for i := len(evs) - 1; i >= 0; i-- {
					if evs[i].ts <= ts {
						want = &evs[i]
						break
					}
				}
			}
			res := lookup(u, ts, dir)
			if want == nil {
				requireStatusErrcode(t, res, http.StatusNotFound, "M_NOT_FOUND")
				return
			}
			requireJSON(t, res, dirJSON(map[string]any{"event_id": want.id, "origin_server_ts": want.ts}))
		}
		for _, u := range []servertest.User{alice, bob} {
			evs := timeline(u)
			if len(evs) < 6 {
				t.Fatalf("%s sees %d events", u.Localpart, len(evs))
			}
			first, last := evs[0].ts, evs[len(evs)-1].ts
			for _, ts := range []int64{0, first - 1, first, first + 1, evs[len(evs)/2].ts, last - 1, last, last + 1, last + 3600_000} {
				expect(u, evs, ts, "f")
				expect(u, evs, ts, "b")
			}
		}
		// bob's view leaves out alice's messages from before his join (history_visibility joined).
		for _, id := range before {
			for _, e := range timeline(bob) {
				if e.id == id {
					t.Fatalf("bob sees %s, sent before he joined", id)
				}
			}
		}
		lastBefore := timeline(alice)
		var beforeTS int64
		for _, e := range lastBefore {
			if e.id == before[len(before)-1] {
				beforeTS = e.ts
			}
		}
		if res := lookup(bob, beforeTS, "b"); res.Status == http.StatusOK && slices.Contains(before, res.Str("event_id")) {
			t.Fatalf("bob found a message sent before he joined: %s", res.Raw)
		}

		// Refusals.
		requireStatusErrcode(t, lookup(carol, 0, "f"), http.StatusForbidden, "M_FORBIDDEN")
		base := dirV1 + "/rooms/" + dirEsc(roomID) + "/timestamp_to_event"
		dirFail(t, s, "GET", base+"?dir=f", alice, nil, http.StatusBadRequest, "M_MISSING_PARAM")
		dirFail(t, s, "GET", base+"?ts=1", alice, nil, http.StatusBadRequest, "M_MISSING_PARAM")
		dirFail(t, s, "GET", base+"?ts=abc&dir=f", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		dirFail(t, s, "GET", base+"?ts=1&dir=x", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestDirectoryReadsWithoutLogin checks the directory reads the spec leaves unauthenticated.
func TestDirectoryReadsWithoutLogin(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	alice := s.Register(t, "alice", "alice password")
	roomID := createRoom(t, s, alice, map[string]any{"preset": "public_chat", "visibility": "public", "room_alias_name": "open", "name": "Open"})
	res := s.Do(t, "GET", "/_matrix/client/v3/publicRooms", "", nil)
	if res.Status != 200 || !strings.Contains(string(res.Raw), roomID) {
		t.Fatalf("publicRooms without a token: %d %s", res.Status, res.Raw)
	}
	res = s.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#open:localhost"), "", nil)
	if res.Status != 200 || res.Str("room_id") != roomID {
		t.Fatalf("alias lookup without a token: %d %s", res.Status, res.Raw)
	}
	res = s.Do(t, "GET", "/_matrix/client/v3/directory/list/room/"+url.PathEscape(roomID), "", nil)
	if res.Status != 200 || res.Str("visibility") != "public" {
		t.Fatalf("directory visibility without a token: %d %s", res.Status, res.Raw)
	}
	expect(t, s.Do(t, "POST", "/_matrix/client/v3/publicRooms", "", map[string]any{}), 401, "M_MISSING_TOKEN")
}
