package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// TestRestrictedJoin: a member of the allowed room joins a restricted room without an invite,
// with a local authoriser named in the join; others are refused.
func TestRestrictedJoin(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		space := createRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		restricted := createRoom(t, s, alice, map[string]any{"preset": "private_chat", "initial_state": []map[string]any{{
			"type": "m.room.join_rules", "state_key": "",
			"content": map[string]any{"join_rule": "restricted", "allow": []map[string]any{{"type": "m.room_membership", "room_id": space}}},
		}}})
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(restricted)+"/join", bob.AccessToken, map[string]any{}), 403, "M_FORBIDDEN")
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(space), bob.AccessToken, map[string]any{}), 200, "")
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(restricted)+"/join", bob.AccessToken, map[string]any{}), 200, "")
		res := s.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(restricted)+"/state/m.room.member/"+url.PathEscape(bob.UserID), bob.AccessToken, nil)
		if res.Str("join_authorised_via_users_server") != alice.UserID || res.Str("membership") != "join" {
			t.Fatalf("restricted join content: %s", res.Raw)
		}
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(restricted)+"/join", carol.AccessToken, map[string]any{}), 403, "M_FORBIDDEN")
	})
}

// TestProfilePropagates: a displayname change updates the member event in joined rooms.
func TestProfilePropagates(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	alice := s.Register(t, "alice", "alice password")
	roomID := createRoom(t, s, alice, map[string]any{})
	expect(t, s.Do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID)+"/displayname", alice.AccessToken,
		map[string]any{"displayname": "Alice Liddell"}), 200, "")
	res := s.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", alice.AccessToken, nil)
	joined, _ := res.JSON["joined"].(map[string]any)
	if m, _ := joined[alice.UserID].(map[string]any); m["display_name"] != "Alice Liddell" {
		t.Fatalf("joined_members after rename: %s", res.Raw)
	}
}
