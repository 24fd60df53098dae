package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// Room tests talk to a whole server over HTTP, on both storage backends. Helpers here are shared
// with roomread_test.go.

const csAPI = "/_matrix/client/v3"

// esc escapes a room ID, event ID, alias or user ID for a path segment.
func esc(s string) string { return url.PathEscape(s) }

// roomPath is /_matrix/client/v3/rooms/{roomID} followed by rest.
func roomPath(roomID, rest string) string { return csAPI + "/rooms/" + esc(roomID) + rest }

// want fails the test unless res has the status and errcode ("" for none).
func want(t *testing.T, what string, res servertest.Response, status int, errcode string) {
	t.Helper()
	if res.Status != status || res.Errcode() != errcode {
		t.Fatalf("%s: got %d %s, want %d %s", what, res.Status, res.Raw, status, errcode)
	}
}

func newRoom(t *testing.T, s *servertest.Server, u servertest.User, body any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	res := s.Do(t, "POST", csAPI+"/createRoom", u.AccessToken, body)
	want(t, "createRoom", res, http.StatusOK, "")
	id := res.Str("room_id")
	if !strings.HasPrefix(id, "!") {
		t.Fatalf("createRoom: room_id %q", id)
	}
	return id
}

var txnSeq atomic.Int64

func nextTxn() string { return fmt.Sprintf("txn%d", txnSeq.Add(1)) }

// sendText sends an m.text message with a fresh txn ID and returns its event ID.
func sendText(t *testing.T, s *servertest.Server, u servertest.User, roomID, body string) string {
	t.Helper()
	res := s.Do(t, "PUT", roomPath(roomID, "/send/m.room.message/"+nextTxn()), u.AccessToken,
		map[string]any{"msgtype": "m.text", "body": body})
	want(t, "send "+body, res, http.StatusOK, "")
	id := res.Str("event_id")
	if !strings.HasPrefix(id, "$") {
		t.Fatalf("send: event_id %q", id)
	}
	return id
}

// member POSTs a membership action (join, leave, invite, kick, ban, unban) for u.
func member(t *testing.T, s *servertest.Server, u servertest.User, roomID, action string, body any) servertest.Response {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	return s.Do(t, "POST", roomPath(roomID, "/"+action), u.AccessToken, body)
}

func mustJoin(t *testing.T, s *servertest.Server, u servertest.User, roomID string) {
	t.Helper()
	want(t, u.Localpart+" joins", member(t, s, u, roomID, "join", nil), http.StatusOK, "")
}

func mustInvite(t *testing.T, s *servertest.Server, by, who servertest.User, roomID string) {
	t.Helper()
	want(t, "invite "+who.Localpart, member(t, s, by, roomID, "invite", map[string]any{"user_id": who.UserID}), http.StatusOK, "")
}

// stateContent GETs /state/{type}/{key} as u and requires 200.
func stateContent(t *testing.T, s *servertest.Server, u servertest.User, roomID, typ, key string) map[string]any {
	t.Helper()
	res := s.Do(t, "GET", roomPath(roomID, "/state/"+typ+"/"+esc(key)), u.AccessToken, nil)
	want(t, "GET state "+typ, res, http.StatusOK, "")
	return res.JSON
}

// joinedRooms is the caller's /joined_rooms as a set.
func joinedRooms(t *testing.T, s *servertest.Server, u servertest.User) map[string]bool {
	t.Helper()
	res := s.Do(t, "GET", csAPI+"/joined_rooms", u.AccessToken, nil)
	want(t, "joined_rooms", res, http.StatusOK, "")
	out := map[string]bool{}
	list, ok := res.JSON["joined_rooms"].([]any)
	if !ok {
		t.Fatalf("joined_rooms: %s", res.Raw)
	}
	for _, id := range list {
		out[id.(string)] = true
	}
	return out
}

// events decodes a JSON array field of a response into objects.
func events(t *testing.T, res servertest.Response, field string) []map[string]any {
	t.Helper()
	raw, ok := res.JSON[field].([]any)
	if !ok {
		t.Fatalf("response has no %s array: %d %s", field, res.Status, res.Raw)
	}
	out := make([]map[string]any, len(raw))
	for i, e := range raw {
		if out[i], ok = e.(map[string]any); !ok {
			t.Fatalf("%s[%d] is not an object: %s", field, i, res.Raw)
		}
	}
	return out
}

// bodies lists content.body of the m.room.message events among evs, in order.
func bodies(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		if e["type"] != "m.room.message" {
			continue
		}
		c, _ := e["content"].(map[string]any)
		if b, ok := c["body"].(string); ok { // redacted messages have none
			out = append(out, b)
		}
	}
	return out
}

func decodeInto(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
}

func num(v any) int { f, _ := v.(float64); return int(f) }

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }

// eventAs GETs /rooms/{room}/event/{id} as u.
func eventAs(t *testing.T, s *servertest.Server, u servertest.User, roomID, eventID string) servertest.Response {
	t.Helper()
	return s.Do(t, "GET", roomPath(roomID, "/event/"+esc(eventID)), u.AccessToken, nil)
}

// allMessages pages backwards through the whole room as u and returns the visible m.room.message
// bodies, oldest first.
func allMessages(t *testing.T, s *servertest.Server, u servertest.User, roomID string) []string {
	t.Helper()
	return bodies(allEvents(t, s, u, roomID))
}

// allEvents pages backwards through the whole room as u and returns the visible events, oldest
// first.
func allEvents(t *testing.T, s *servertest.Server, u servertest.User, roomID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	from := ""
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatalf("/messages does not end")
		}
		q := "?dir=b&limit=100"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		res := s.Do(t, "GET", roomPath(roomID, "/messages"+q), u.AccessToken, nil)
		want(t, "/messages", res, http.StatusOK, "")
		for _, e := range events(t, res, "chunk") { // newest first
			out = append([]map[string]any{e}, out...)
		}
		if from = res.Str("end"); from == "" {
			break
		}
	}
	return out
}

func TestCreateRoomPresets(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		cases := []struct {
			name                        string
			body                        map[string]any
			joinRule, history, guest    string
			inviteeAdmin, bobCanJoinNow bool
		}{
			{"private_chat", map[string]any{"preset": "private_chat"}, "invite", "shared", "can_join", false, false},
			{"public_chat", map[string]any{"preset": "public_chat"}, "public", "shared", "forbidden", false, true},
			{"trusted_private_chat", map[string]any{"preset": "trusted_private_chat"}, "invite", "shared", "can_join", true, false},
			{"visibility public", map[string]any{"visibility": "public"}, "public", "shared", "forbidden", false, true},
			{"visibility private", map[string]any{"visibility": "private"}, "invite", "shared", "can_join", false, false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				carol := s.Register(t, "carol"+strings.ReplaceAll(tc.name, " ", ""), "carol password")
				tc.body["invite"] = []string{carol.UserID}
				roomID := newRoom(t, s, alice, tc.body)
				if got := stateContent(t, s, alice, roomID, "m.room.join_rules", "")["join_rule"]; got != tc.joinRule {
					t.Errorf("join_rule %v, want %s", got, tc.joinRule)
				}
				if got := stateContent(t, s, alice, roomID, "m.room.history_visibility", "")["history_visibility"]; got != tc.history {
					t.Errorf("history_visibility %v, want %s", got, tc.history)
				}
				if got := stateContent(t, s, alice, roomID, "m.room.guest_access", "")["guest_access"]; got != tc.guest {
					t.Errorf("guest_access %v, want %s", got, tc.guest)
				}
				pl := stateContent(t, s, alice, roomID, "m.room.power_levels", "")
				users := obj(pl["users"])
				if num(users[alice.UserID]) != 100 {
					t.Errorf("creator's power level: %v", pl)
				}
				if _, ok := users[carol.UserID]; ok != tc.inviteeAdmin || tc.inviteeAdmin && num(users[carol.UserID]) != 100 {
					t.Errorf("invitee in power levels users: %v (want at 100: %v)", users, tc.inviteeAdmin)
				}
				if got := stateContent(t, s, alice, roomID, "m.room.member", carol.UserID)["membership"]; got != "invite" {
					t.Errorf("invitee membership %v", got)
				}
				res := member(t, s, bob, roomID, "join", nil)
				if tc.bobCanJoinNow {
					want(t, "join public room", res, http.StatusOK, "")
				} else {
					want(t, "join invite-only room", res, http.StatusForbidden, "M_FORBIDDEN")
				}
				// The invitee of trusted_private_chat may change state right after joining.
				mustJoin(t, s, carol, roomID)
				res = s.Do(t, "PUT", roomPath(roomID, "/state/m.room.name"), carol.AccessToken, map[string]any{"name": "by invitee"})
				if tc.inviteeAdmin {
					want(t, "trusted invitee sets name", res, http.StatusOK, "")
				} else {
					want(t, "plain invitee sets name", res, http.StatusForbidden, "M_FORBIDDEN")
				}
			})
		}
	})
}

func TestCreateRoomOptions(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		server := s.Config.ServerName

		t.Run("name topic alias", func(t *testing.T) {
			roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat", "name": "The Pub", "topic": "Happy hour",
				"room_alias_name": "pub"})
			if got := stateContent(t, s, alice, roomID, "m.room.name", "")["name"]; got != "The Pub" {
				t.Errorf("name %v", got)
			}
			topic := stateContent(t, s, alice, roomID, "m.room.topic", "")
			if topic["topic"] != "Happy hour" {
				t.Errorf("topic %v", topic)
			}
			alias := "#pub:" + server
			if got := stateContent(t, s, alice, roomID, "m.room.canonical_alias", "")["alias"]; got != alias {
				t.Errorf("canonical alias %v, want %s", got, alias)
			}
			res := s.Do(t, "POST", csAPI+"/join/"+esc(alias), bob.AccessToken, map[string]any{})
			want(t, "join by alias", res, http.StatusOK, "")
			if res.Str("room_id") != roomID {
				t.Errorf("join by alias gave %s, want %s", res.Raw, roomID)
			}
			if !joinedRooms(t, s, bob)[roomID] {
				t.Errorf("bob is not joined after joining by alias")
			}
			// The alias is taken now; the failed create leaves no room behind.
			before := joinedRooms(t, s, alice)
			res = s.Do(t, "POST", csAPI+"/createRoom", alice.AccessToken, map[string]any{"room_alias_name": "pub"})
			want(t, "alias taken", res, http.StatusBadRequest, "M_ROOM_IN_USE")
			if after := joinedRooms(t, s, alice); len(after) != len(before) {
				t.Errorf("failed createRoom left a room: %v -> %v", before, after)
			}
		})

		t.Run("is_direct", func(t *testing.T) {
			roomID := newRoom(t, s, alice, map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.UserID}})
			if got := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID); got["is_direct"] != true || got["membership"] != "invite" {
				t.Errorf("direct invite member content %v", got)
			}
			roomID = newRoom(t, s, alice, map[string]any{"invite": []string{bob.UserID}})
			if got := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID); got["is_direct"] != nil {
				t.Errorf("non-direct invite has is_direct: %v", got)
			}
		})

		t.Run("initial_state overrides preset", func(t *testing.T) {
			roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat", "name": "wins",
				"initial_state": []map[string]any{
					{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "invite"}},
					{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}},
					{"type": "m.room.name", "content": map[string]any{"name": "loses"}},
					{"type": "org.example.custom", "state_key": "k", "content": map[string]any{"x": 1}},
				}})
			if got := stateContent(t, s, alice, roomID, "m.room.join_rules", "")["join_rule"]; got != "invite" {
				t.Errorf("join_rule %v, want initial_state's invite", got)
			}
			if got := stateContent(t, s, alice, roomID, "m.room.history_visibility", "")["history_visibility"]; got != "joined" {
				t.Errorf("history_visibility %v", got)
			}
			if got := stateContent(t, s, alice, roomID, "m.room.guest_access", "")["guest_access"]; got != "forbidden" {
				t.Errorf("guest_access %v: the preset's event should remain where initial_state has none", got)
			}
			if got := stateContent(t, s, alice, roomID, "m.room.name", "")["name"]; got != "wins" {
				t.Errorf("name %v: the name parameter overrides initial_state", got)
			}
			if got := stateContent(t, s, alice, roomID, "org.example.custom", "k")["x"]; num(got) != 1 {
				t.Errorf("custom initial state %v", got)
			}
			want(t, "join invite-only by initial_state", member(t, s, bob, roomID, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
			// Each state key appears once in /state.
			res := s.Do(t, "GET", roomPath(roomID, "/state"), alice.AccessToken, nil)
			want(t, "GET /state", res, http.StatusOK, "")
			var list []map[string]any
			decodeInto(t, res.Raw, &list)
			seen := map[string]int{}
			for _, e := range list {
				seen[fmt.Sprint(e["type"], "|", e["state_key"])]++
			}
			for k, n := range seen {
				if n != 1 {
					t.Errorf("state %s appears %d times", k, n)
				}
			}
		})

		t.Run("room version 12", func(t *testing.T) {
			roomID := newRoom(t, s, alice, map[string]any{"room_version": "12", "invite": []string{bob.UserID}, "preset": "private_chat"})
			if strings.Contains(roomID, ":") || len(roomID) < 40 {
				t.Fatalf("v12 room ID %q should be ! + the create event's hash, without a server", roomID)
			}
			res := s.Do(t, "GET", roomPath(roomID, "/state/m.room.create?format=event"), alice.AccessToken, nil)
			want(t, "create event", res, http.StatusOK, "")
			if got := res.Str("event_id"); got != "$"+roomID[1:] {
				t.Errorf("create event ID %q, want $ + room ID's hash %q", got, roomID[1:])
			}
			create := obj(res.JSON["content"])
			if create["room_version"] != "12" || create["creator"] != nil {
				t.Errorf("v12 create content %v", create)
			}
			if res.Str("sender") != alice.UserID {
				t.Errorf("create sender %q", res.Str("sender"))
			}
			pl := stateContent(t, s, alice, roomID, "m.room.power_levels", "")
			if _, ok := obj(pl["users"])[alice.UserID]; ok {
				t.Errorf("v12 creator is listed in power levels users: %v", pl)
			}
			if num(obj(pl["events"])["m.room.tombstone"]) <= num(pl["state_default"]) {
				t.Errorf("v12 tombstone level must exceed state_default: %v", pl)
			}
			// The creator's infinite power still lets her change state and invite.
			want(t, "v12 creator sets name", s.Do(t, "PUT", roomPath(roomID, "/state/m.room.name"), alice.AccessToken,
				map[string]any{"name": "twelve"}), http.StatusOK, "")
			mustJoin(t, s, bob, roomID)
			sendText(t, s, bob, roomID, "hello v12")
			if got := allMessages(t, s, alice, roomID); len(got) != 1 || got[0] != "hello v12" {
				t.Errorf("v12 messages %v", got)
			}
		})

		t.Run("bad requests", func(t *testing.T) {
			before := joinedRooms(t, s, alice)
			for _, tc := range []struct {
				name    string
				body    any
				errcode string
			}{
				{"unsupported version", map[string]any{"room_version": "99"}, "M_UNSUPPORTED_ROOM_VERSION"},
				{"bad preset", map[string]any{"preset": "party"}, "M_BAD_JSON"},
				{"bad visibility", map[string]any{"visibility": "secret"}, "M_BAD_JSON"},
				{"preset not a string", map[string]any{"preset": 1}, "M_BAD_JSON"},
				{"create in initial_state", map[string]any{"initial_state": []map[string]any{
					{"type": "m.room.create", "content": map[string]any{"room_version": "11"}}}}, "M_INVALID_ROOM_STATE"},
				{"creator below the levels the preset needs", map[string]any{"power_level_content_override": map[string]any{
					"users": map[string]any{alice.UserID: 0}}}, "M_INVALID_ROOM_STATE"},
				{"name above the creator's level", map[string]any{"name": "x", "power_level_content_override": map[string]any{
					"events": map[string]any{"m.room.name": 101}}}, "M_INVALID_ROOM_STATE"},
				{"malformed invitee", map[string]any{"invite": []string{"bob"}}, "M_INVALID_PARAM"},
				{"malformed invitee no server", map[string]any{"invite": []string{"@bob"}}, "M_INVALID_PARAM"},
				{"not json", "{", "M_NOT_JSON"},
				{"array body", "[]", "M_BAD_JSON"},
			} {
				res := s.Do(t, "POST", csAPI+"/createRoom", alice.AccessToken, tc.body)
				want(t, tc.name, res, http.StatusBadRequest, tc.errcode)
			}
			if after := joinedRooms(t, s, alice); len(after) != len(before) {
				t.Errorf("rejected createRoom calls left rooms: %d -> %d", len(before), len(after))
			}
		})
	})
}

func TestMembership(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")

		t.Run("invite join leave", func(t *testing.T) {
			roomID := newRoom(t, s, alice, map[string]any{"preset": "private_chat"})
			want(t, "join uninvited", member(t, s, bob, roomID, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
			mustInvite(t, s, alice, bob, roomID)
			if joinedRooms(t, s, bob)[roomID] {
				t.Fatalf("invited user is listed as joined")
			}
			res := s.Do(t, "POST", csAPI+"/join/"+esc(roomID), bob.AccessToken, map[string]any{})
			want(t, "join by room ID", res, http.StatusOK, "")
			if res.Str("room_id") != roomID || !joinedRooms(t, s, bob)[roomID] {
				t.Fatalf("after join: %s, joined_rooms %v", res.Raw, joinedRooms(t, s, bob))
			}
			if got := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID)["membership"]; got != "join" {
				t.Fatalf("membership %v", got)
			}
			want(t, "leave", member(t, s, bob, roomID, "leave", nil), http.StatusOK, "")
			if joinedRooms(t, s, bob)[roomID] {
				t.Fatalf("left room still listed")
			}
			if got := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID)["membership"]; got != "leave" {
				t.Fatalf("membership after leave %v", got)
			}
			// Having left an invite-only room, bob needs a new invite.
			want(t, "rejoin uninvited", member(t, s, bob, roomID, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
			want(t, "invite without user_id", member(t, s, alice, roomID, "invite", map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
			want(t, "invite malformed user", member(t, s, alice, roomID, "invite", map[string]any{"user_id": "carol"}), http.StatusBadRequest, "M_INVALID_PARAM")
			want(t, "invite by non-member", member(t, s, carol, roomID, "invite", map[string]any{"user_id": bob.UserID}), http.StatusForbidden, "M_FORBIDDEN")
		})

		t.Run("kick", func(t *testing.T) {
			roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
			mustJoin(t, s, bob, roomID)
			mustJoin(t, s, carol, roomID)
			sendText(t, s, alice, roomID, "before kick")
			want(t, "kick by unprivileged", member(t, s, carol, roomID, "kick", map[string]any{"user_id": bob.UserID}), http.StatusForbidden, "M_FORBIDDEN")
			want(t, "ban by unprivileged", member(t, s, carol, roomID, "ban", map[string]any{"user_id": bob.UserID}), http.StatusForbidden, "M_FORBIDDEN")
			if got := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID)["membership"]; got != "join" {
				t.Fatalf("refused kick/ban changed membership to %v", got)
			}
			want(t, "kick", member(t, s, alice, roomID, "kick", map[string]any{"user_id": bob.UserID, "reason": "spam"}), http.StatusOK, "")
			mc := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID)
			if mc["membership"] != "leave" || mc["reason"] != "spam" {
				t.Fatalf("kicked member content %v", mc)
			}
			res := s.Do(t, "PUT", roomPath(roomID, "/send/m.room.message/"+nextTxn()), bob.AccessToken, map[string]any{"body": "x"})
			want(t, "kicked user sends", res, http.StatusForbidden, "M_FORBIDDEN")
			sendText(t, s, alice, roomID, "after kick")
			got := allMessages(t, s, bob, roomID)
			if strings.Join(got, ",") != "before kick" {
				t.Fatalf("kicked user sees %v, want only the message before the kick", got)
			}
			if got := allMessages(t, s, alice, roomID); strings.Join(got, ",") != "before kick,after kick" {
				t.Fatalf("alice sees %v", got)
			}
			// A public room can be rejoined after a kick.
			mustJoin(t, s, bob, roomID)
		})

		t.Run("ban unban", func(t *testing.T) {
			roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
			mustJoin(t, s, bob, roomID)
			mustJoin(t, s, carol, roomID)
			want(t, "ban", member(t, s, alice, roomID, "ban", map[string]any{"user_id": bob.UserID, "reason": "troll"}), http.StatusOK, "")
			if got := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID)["membership"]; got != "ban" {
				t.Fatalf("membership after ban %v", got)
			}
			if joinedRooms(t, s, bob)[roomID] {
				t.Fatalf("banned user still joined")
			}
			want(t, "banned user joins", member(t, s, bob, roomID, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
			want(t, "unban by unprivileged", member(t, s, carol, roomID, "unban", map[string]any{"user_id": bob.UserID}), http.StatusForbidden, "M_FORBIDDEN")
			want(t, "unban non-banned", member(t, s, alice, roomID, "unban", map[string]any{"user_id": carol.UserID}), http.StatusBadRequest, "M_BAD_STATE")
			if got := stateContent(t, s, alice, roomID, "m.room.member", carol.UserID)["membership"]; got != "join" {
				t.Fatalf("unban of a non-banned user changed membership to %v", got)
			}
			want(t, "unban", member(t, s, alice, roomID, "unban", map[string]any{"user_id": bob.UserID}), http.StatusOK, "")
			if got := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID)["membership"]; got != "leave" {
				t.Fatalf("membership after unban %v", got)
			}
			mustJoin(t, s, bob, roomID)
			// Banning a user who never was in the room works and keeps them out.
			dave := s.Register(t, "dave", "dave password")
			want(t, "ban outsider", member(t, s, alice, roomID, "ban", map[string]any{"user_id": dave.UserID}), http.StatusOK, "")
			want(t, "banned outsider joins", member(t, s, dave, roomID, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
		})

		t.Run("unknown room", func(t *testing.T) {
			unknown := "!doesnotexist:" + s.Config.ServerName
			want(t, "join unknown room", member(t, s, bob, unknown, "join", nil), http.StatusNotFound, "M_NOT_FOUND")
			want(t, "join/ unknown room", s.Do(t, "POST", csAPI+"/join/"+esc(unknown), bob.AccessToken, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
			want(t, "join unknown alias", s.Do(t, "POST", csAPI+"/join/"+esc("#nope:"+s.Config.ServerName), bob.AccessToken, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
			res := s.Do(t, "PUT", roomPath(unknown, "/send/m.room.message/"+nextTxn()), bob.AccessToken, map[string]any{"body": "x"})
			if res.Status != http.StatusNotFound && res.Status != http.StatusForbidden {
				t.Fatalf("send to unknown room: %d %s", res.Status, res.Raw)
			}
			want(t, "join/ garbage", s.Do(t, "POST", csAPI+"/join/garbage", bob.AccessToken, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
		})
	})
}

func TestSendAndTransactionIDs(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		alice2 := s.Login(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		mustJoin(t, s, bob, roomID)

		put := func(u servertest.User, txn string, body any) servertest.Response {
			return s.Do(t, "PUT", roomPath(roomID, "/send/m.room.message/"+txn), u.AccessToken, body)
		}
		first := put(alice, "same-txn", map[string]any{"msgtype": "m.text", "body": "once"})
		want(t, "send", first, http.StatusOK, "")
		id := first.Str("event_id")

		// The sending device sees its transaction ID; another device of the same user and other users do not.
		res := eventAs(t, s, alice, roomID, id)
		want(t, "GET event", res, http.StatusOK, "")
		if res.Str("event_id") != id || res.Str("sender") != alice.UserID || res.Str("type") != "m.room.message" ||
			obj(res.JSON["content"])["body"] != "once" || res.Str("room_id") != roomID {
			t.Fatalf("GET event: %s", res.Raw)
		}
		if got := obj(res.JSON["unsigned"])["transaction_id"]; got != "same-txn" {
			t.Fatalf("sending device: unsigned.transaction_id %v in %s", got, res.Raw)
		}
		for _, u := range []servertest.User{alice2, bob} {
			res := eventAs(t, s, u, roomID, id)
			want(t, "GET event as "+u.DeviceID, res, http.StatusOK, "")
			if _, ok := obj(res.JSON["unsigned"])["transaction_id"]; ok {
				t.Fatalf("%s (device %s) sees the transaction ID: %s", u.UserID, u.DeviceID, res.Raw)
			}
		}

		// A retry with the same txn ID (even with another body) is the same event, stored once.
		again := put(alice, "same-txn", map[string]any{"msgtype": "m.text", "body": "retry"})
		want(t, "retry", again, http.StatusOK, "")
		if again.Str("event_id") != id {
			t.Fatalf("retry gave %s, want %s", again.Str("event_id"), id)
		}
		// The same txn ID from another device is another event.
		other := put(alice2, "same-txn", map[string]any{"msgtype": "m.text", "body": "other device"})
		want(t, "other device", other, http.StatusOK, "")
		if other.Str("event_id") == id || other.Str("event_id") == "" {
			t.Fatalf("other device's txn gave %q", other.Str("event_id"))
		}
		if got := allMessages(t, s, alice, roomID); strings.Join(got, ",") != "once,other device" {
			t.Fatalf("messages %v, want [once other device]", got)
		}
		// A transaction ID is scoped to the request path: the same one into another room is a new event.
		room2 := newRoom(t, s, alice, nil)
		res = s.Do(t, "PUT", roomPath(room2, "/send/m.room.message/same-txn"), alice.AccessToken, map[string]any{"body": "room two"})
		want(t, "same txn, other room", res, http.StatusOK, "")
		if res.Str("event_id") == id {
			t.Fatalf("same txn ID in another room returned the first room's event")
		}
		if got := allMessages(t, s, alice, room2); strings.Join(got, ",") != "room two" {
			t.Fatalf("second room messages %v", got)
		}

		// Not in the room.
		want(t, "non-member sends", put(carol, nextTxn(), map[string]any{"body": "x"}), http.StatusForbidden, "M_FORBIDDEN")
		// Bodies that are not objects.
		want(t, "array body", put(alice, nextTxn(), "[1,2]"), http.StatusBadRequest, "M_BAD_JSON")
		want(t, "string body", put(alice, nextTxn(), `"hello"`), http.StatusBadRequest, "M_BAD_JSON")
		want(t, "number body", put(alice, nextTxn(), "42"), http.StatusBadRequest, "M_BAD_JSON")
		want(t, "invalid JSON", put(alice, nextTxn(), "{nope"), http.StatusBadRequest, "M_NOT_JSON")
		want(t, "empty body", put(alice, nextTxn(), ""), http.StatusBadRequest, "M_NOT_JSON")
		if got := allMessages(t, s, alice, roomID); len(got) != 2 {
			t.Fatalf("rejected sends stored events: %v", got)
		}
		// A custom event type goes through and keeps its content.
		res = s.Do(t, "PUT", roomPath(roomID, "/send/org.example.ping/"+nextTxn()), bob.AccessToken, map[string]any{"n": 7})
		want(t, "custom type", res, http.StatusOK, "")
		ev := eventAs(t, s, alice, roomID, res.Str("event_id"))
		if ev.Str("type") != "org.example.ping" || num(obj(ev.JSON["content"])["n"]) != 7 {
			t.Fatalf("custom event %s", ev.Raw)
		}
		want(t, "unknown event", eventAs(t, s, alice, roomID, "$nosuchevent"), http.StatusNotFound, "M_NOT_FOUND")
	})
}

func TestRoomState(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		mustJoin(t, s, bob, roomID)

		putState := func(u servertest.User, path string, body any) servertest.Response {
			return s.Do(t, "PUT", roomPath(roomID, "/state/"+path), u.AccessToken, body)
		}
		res := putState(alice, "m.room.topic", map[string]any{"topic": "no slash"})
		want(t, "PUT state without key", res, http.StatusOK, "")
		topicID := res.Str("event_id")
		if got := stateContent(t, s, bob, roomID, "m.room.topic", "")["topic"]; got != "no slash" {
			t.Fatalf("topic %v", got)
		}
		res = s.Do(t, "GET", roomPath(roomID, "/state/m.room.topic"), bob.AccessToken, nil)
		if res.Status != http.StatusOK || res.Str("topic") != "no slash" {
			t.Fatalf("GET state without trailing slash: %d %s", res.Status, res.Raw)
		}
		full := s.Do(t, "GET", roomPath(roomID, "/state/m.room.topic?format=event"), bob.AccessToken, nil)
		want(t, "format=event", full, http.StatusOK, "")
		if full.Str("event_id") != topicID || full.Str("type") != "m.room.topic" || full.Str("sender") != alice.UserID ||
			full.Str("state_key") != "" || full.JSON["state_key"] == nil || obj(full.JSON["content"])["topic"] != "no slash" ||
			full.JSON["origin_server_ts"] == nil {
			t.Fatalf("?format=event should give the whole event: %s", full.Raw)
		}
		content := s.Do(t, "GET", roomPath(roomID, "/state/m.room.topic?format=content"), bob.AccessToken, nil)
		if content.Status != http.StatusOK || content.Str("topic") != "no slash" || content.JSON["event_id"] != nil {
			t.Fatalf("format=content: %s", content.Raw)
		}

		want(t, "PUT state with empty key", putState(alice, "m.room.topic/", map[string]any{"topic": "slash"}), http.StatusOK, "")
		if got := stateContent(t, s, bob, roomID, "m.room.topic", "")["topic"]; got != "slash" {
			t.Fatalf("topic after PUT .../m.room.topic/: %v", got)
		}

		// Custom state keys, including ones that need escaping.
		for _, key := range []string{"k1", alice.UserID, "with space/and slash", "ünïcode #?&"} {
			res := putState(alice, "org.example.custom/"+esc(key), map[string]any{"key": key})
			want(t, "PUT custom state "+key, res, http.StatusOK, "")
			if got := stateContent(t, s, bob, roomID, "org.example.custom", key)["key"]; got != key {
				t.Fatalf("custom state at %q: %v", key, got)
			}
		}
		want(t, "state key of another user", putState(alice, "org.example.custom/"+esc(bob.UserID), map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
		want(t, "GET missing state key", s.Do(t, "GET", roomPath(roomID, "/state/org.example.custom/nokey"), bob.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		want(t, "GET missing state type", s.Do(t, "GET", roomPath(roomID, "/state/org.example.custom"), bob.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")

		// bob has power 0: state needs 50.
		want(t, "unprivileged name", putState(bob, "m.room.name", map[string]any{"name": "bob's"}), http.StatusForbidden, "M_FORBIDDEN")
		want(t, "unprivileged power levels", putState(bob, "m.room.power_levels", map[string]any{"users": map[string]any{bob.UserID: 100}}), http.StatusForbidden, "M_FORBIDDEN")
		want(t, "GET name never set", s.Do(t, "GET", roomPath(roomID, "/state/m.room.name"), bob.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		want(t, "state body not an object", putState(alice, "m.room.topic", "[]"), http.StatusBadRequest, "M_BAD_JSON")
		want(t, "state body not JSON", putState(alice, "m.room.topic", "{"), http.StatusBadRequest, "M_NOT_JSON")

		// A user may set their own member state key's displayname but not someone else's.
		want(t, "own member event", putState(bob, "m.room.member/"+esc(bob.UserID), map[string]any{"membership": "join", "displayname": "Bobby"}), http.StatusOK, "")
		if got := stateContent(t, s, alice, roomID, "m.room.member", bob.UserID)["displayname"]; got != "Bobby" {
			t.Fatalf("displayname %v", got)
		}
		want(t, "other's member event", putState(bob, "m.room.member/"+esc(alice.UserID), map[string]any{"membership": "leave"}), http.StatusForbidden, "M_FORBIDDEN")

		// /state lists the current state once per key with the latest topic.
		res = s.Do(t, "GET", roomPath(roomID, "/state"), bob.AccessToken, nil)
		want(t, "GET /state", res, http.StatusOK, "")
		var list []map[string]any
		decodeInto(t, res.Raw, &list)
		topics := 0
		for _, e := range list {
			if e["type"] == "m.room.topic" {
				topics++
				if obj(e["content"])["topic"] != "slash" {
					t.Errorf("/state topic %v", e)
				}
			}
		}
		if topics != 1 {
			t.Fatalf("/state has %d topic events", topics)
		}
	})
}

func TestRedaction(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		mustJoin(t, s, bob, roomID)
		redact := func(u servertest.User, eventID, txn string, body any) servertest.Response {
			return s.Do(t, "PUT", roomPath(roomID, "/redact/"+esc(eventID)+"/"+txn), u.AccessToken, body)
		}

		// Own message.
		own := sendText(t, s, bob, roomID, "oops")
		res := redact(bob, own, "r1", map[string]any{"reason": "typo"})
		want(t, "redact own", res, http.StatusOK, "")
		redID := res.Str("event_id")
		ev := eventAs(t, s, alice, roomID, own)
		want(t, "GET redacted", ev, http.StatusOK, "")
		if c := obj(ev.JSON["content"]); len(c) != 0 {
			t.Fatalf("redacted content %v", c)
		}
		because := obj(obj(ev.JSON["unsigned"])["redacted_because"])
		if because["event_id"] != redID || because["type"] != "m.room.redaction" || obj(because["content"])["reason"] != "typo" {
			t.Fatalf("redacted_because %v in %s", because, ev.Raw)
		}
		if ev.Str("type") != "m.room.message" || ev.Str("sender") != bob.UserID {
			t.Fatalf("redacted event lost its envelope: %s", ev.Raw)
		}
		// The same txn ID is the same redaction.
		again := redact(bob, own, "r1", map[string]any{"reason": "typo"})
		want(t, "redact retry", again, http.StatusOK, "")
		if again.Str("event_id") != redID {
			t.Fatalf("redact retry gave %s, want %s", again.Str("event_id"), redID)
		}
		red := eventAs(t, s, alice, roomID, redID)
		want(t, "GET redaction", red, http.StatusOK, "")
		if red.Str("type") != "m.room.redaction" {
			t.Fatalf("redaction event %s", red.Raw)
		}

		// Someone else's message without the redact level (bob 0 < 50).
		theirs := sendText(t, s, alice, roomID, "keep me")
		want(t, "redact other's without power", redact(bob, theirs, "r2", nil), http.StatusForbidden, "M_FORBIDDEN")
		ev = eventAs(t, s, bob, roomID, theirs)
		if obj(ev.JSON["content"])["body"] != "keep me" || obj(ev.JSON["unsigned"])["redacted_because"] != nil {
			t.Fatalf("refused redaction changed the event: %s", ev.Raw)
		}
		// With the redact level (alice 100).
		bobs := sendText(t, s, bob, roomID, "moderate me")
		res = redact(alice, bobs, "r3", map[string]any{})
		want(t, "moderator redacts", res, http.StatusOK, "")
		ev = eventAs(t, s, bob, roomID, bobs)
		if len(obj(ev.JSON["content"])) != 0 || obj(obj(ev.JSON["unsigned"])["redacted_because"])["event_id"] != res.Str("event_id") {
			t.Fatalf("moderated event %s", ev.Raw)
		}
		// The timeline shows the redacted form too.
		msgs := s.Do(t, "GET", roomPath(roomID, "/messages?dir=b&limit=50"), alice.AccessToken, nil)
		want(t, "/messages", msgs, http.StatusOK, "")
		for _, e := range events(t, msgs, "chunk") {
			if e["event_id"] == own || e["event_id"] == bobs {
				if len(obj(e["content"])) != 0 {
					t.Fatalf("/messages shows redacted event's content: %v", e)
				}
			}
		}
		if got := bodies(events(t, msgs, "chunk")); strings.Join(got, ",") != "keep me" {
			t.Fatalf("message bodies %v, want only [keep me]", got)
		}
		want(t, "redact not JSON", redact(alice, theirs, "r4", "{"), http.StatusBadRequest, "M_NOT_JSON")
	})
}
