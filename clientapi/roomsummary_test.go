package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// TestRoomSummary covers who may see a room's summary and what it holds.
func TestRoomSummary(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		public := createRoom(t, s, alice, map[string]any{"preset": "public_chat", "name": "Lobby", "room_alias_name": "lobby"})
		private := createRoom(t, s, alice, map[string]any{"preset": "private_chat", "name": "Secret", "invite": []string{bob.UserID}})

		res := s.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape("#lobby:localhost"), "", nil)
		if res.Status != 200 || res.Str("room_id") != public || res.Str("name") != "Lobby" || res.Str("join_rule") != "public" ||
			res.Str("room_version") == "" || res.JSON["membership"] != nil {
			t.Fatalf("public summary without a token: %d %s", res.Status, res.Raw)
		}
		res = s.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(public), alice.AccessToken, nil)
		if res.Str("membership") != "join" || res.JSON["num_joined_members"] != float64(1) {
			t.Fatalf("summary for a member: %s", res.Raw)
		}
		// A private room: hidden from strangers, shown to the invitee with their membership.
		expect(t, s.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(private), "", nil), 404, "M_NOT_FOUND")
		carol := s.Register(t, "carol", "carol password")
		expect(t, s.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(private), carol.AccessToken, nil), 404, "M_NOT_FOUND")
		res = s.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(private), bob.AccessToken, nil)
		if res.Status != 200 || res.Str("membership") != "invite" || res.Str("name") != "Secret" {
			t.Fatalf("summary for the invitee: %d %s", res.Status, res.Raw)
		}
		expect(t, s.Do(t, "GET", "/_matrix/client/v1/room_summary/nonsense", "", nil), 400, "M_INVALID_PARAM")
		expect(t, s.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(public), "mat_bad", nil), 401, "M_UNKNOWN_TOKEN")

		// Mutual rooms.
		s.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(public), bob.AccessToken, map[string]any{})
		res = s.Do(t, "GET", "/_matrix/client/v1/mutual_rooms?user_id="+url.QueryEscape(alice.UserID), bob.AccessToken, nil)
		if ids, _ := res.JSON["joined"].([]any); res.Status != 200 || len(ids) != 1 || ids[0] != public || res.JSON["count"] != float64(1) {
			t.Fatalf("mutual rooms: %d %s", res.Status, res.Raw)
		}
		expect(t, s.Do(t, "GET", "/_matrix/client/v1/mutual_rooms?user_id="+url.QueryEscape(bob.UserID), bob.AccessToken, nil), 400, "M_INVALID_PARAM")
		expect(t, s.Do(t, "GET", "/_matrix/client/v1/mutual_rooms", bob.AccessToken, nil), 400, "M_MISSING_PARAM")
	})
}
