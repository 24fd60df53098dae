package clientapi_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// TestReports: events, rooms and users are reported to the server's admins under the spec's
// conditions (an event only by a member who can see it, a known room, a known user), each report
// stored; the Synapse-compatible admin API lists, reads and deletes event reports, newest first
// and page by page, for admins only.
func TestReports(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password alice")
		bob := s.Register(t, "bob", "password bob")
		carol := s.Register(t, "carol", "password carol")
		admin := registerShared(t, s, "admin", "password admin", true)
		roomID := s.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat"}).Str("room_id")
		mustJoin(t, s, bob, roomID)
		eventID := send(t, s, alice, roomID, "r1", map[string]any{"msgtype": "m.text", "body": "something bad"})
		other := s.Do(t, "POST", "/_matrix/client/v3/createRoom", carol.AccessToken, map[string]any{}).Str("room_id")
		otherEvent := send(t, s, carol, other, "r2", map[string]any{"msgtype": "m.text", "body": "elsewhere"})

		reportEvent := func(roomID, eventID string) string {
			return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/report/" + url.PathEscape(eventID)
		}
		reportRoom := func(roomID string) string { return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/report" }
		reportUser := func(userID string) string { return "/_matrix/client/v3/users/" + url.PathEscape(userID) + "/report" }
		for _, c := range []struct {
			name, token, path string
			body              any
			status            int
			errcode           string
		}{
			{"member reports an event", bob.AccessToken, reportEvent(roomID, eventID), map[string]any{"reason": "spam"}, 200, ""},
			{"sender reports her own", alice.AccessToken, reportEvent(roomID, eventID), map[string]any{"reason": "oops"}, 200, ""},
			{"no body", bob.AccessToken, reportEvent(roomID, eventID), ``, 200, ""},
			{"non-member reports an event", carol.AccessToken, reportEvent(roomID, eventID), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},
			{"unknown event", bob.AccessToken, reportEvent(roomID, "$nope"), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},
			{"event of another room", bob.AccessToken, reportEvent(roomID, otherEvent), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},
			{"reason too long", bob.AccessToken, reportEvent(roomID, eventID), map[string]any{"reason": strings.Repeat("r", 4097)}, 400, "M_INVALID_PARAM"},
			{"body not JSON", bob.AccessToken, reportEvent(roomID, eventID), `{"reason":`, 400, "M_NOT_JSON"},
			{"no token", "", reportEvent(roomID, eventID), map[string]any{"reason": "x"}, 401, "M_MISSING_TOKEN"},
			{"room, by a non-member", carol.AccessToken, reportRoom(roomID), map[string]any{"reason": "bad room"}, 200, ""},
			{"unknown room", carol.AccessToken, reportRoom("!nope:localhost"), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},
			{"local user", bob.AccessToken, reportUser(alice.UserID), map[string]any{"reason": "rude"}, 200, ""},
			{"unknown local user", bob.AccessToken, reportUser("@ghost:localhost"), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},
			{"remote user never seen", bob.AccessToken, reportUser("@someone:elsewhere.example"), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},
			{"not a user ID", bob.AccessToken, reportUser("notauser"), map[string]any{"reason": "x"}, 400, "M_INVALID_PARAM"},
		} {
			t.Run(c.name, func(t *testing.T) {
				res := s.Do(t, "POST", c.path, c.token, c.body)
				if c.status == 200 {
					requireJSON(t, res, `{}`)
					return
				}
				requireStatusErrcode(t, res, c.status, c.errcode)
			})
		}
		// The room and user reports are stored too.
		ctx := context.Background()
		for kind, want := range map[string]string{storage.ReportRoom: roomID, storage.ReportUser: alice.UserID} {
			rs, total, err := s.Store.Read().Reports(ctx, kind, 0, 10)
			if err != nil || total != 1 || len(rs) != 1 || rs[0].RoomID+rs[0].UserID != want {
				t.Fatalf("%s reports: %+v (total %d), %v", kind, rs, total, err)
			}
		}

		// The admin API: three event reports, newest first.
		list := "/_synapse/admin/v1/event_reports"
		res := s.Do(t, "GET", list, admin.AccessToken, nil)
		reports, _ := res.JSON["event_reports"].([]any)
		if res.Status != 200 || res.JSON["total"] != float64(3) || len(reports) != 3 {
			t.Fatalf("event reports: %d %s", res.Status, res.Raw)
		}
		first := reports[2].(map[string]any) // the oldest: bob's "spam"
		if first["room_id"] != roomID || first["event_id"] != eventID || first["user_id"] != bob.UserID || first["sender"] != alice.UserID ||
			first["reason"] != "spam" || first["received_ts"].(float64) <= 0 {
			t.Fatalf("bob's report: %v", first)
		}
		if reports[1].(map[string]any)["reason"] != "oops" || reports[0].(map[string]any)["reason"] != "" {
			t.Fatalf("not newest first: %s", res.Raw)
		}
		page := s.Do(t, "GET", list+"?limit=2", admin.AccessToken, nil)
		if got, _ := page.JSON["event_reports"].([]any); len(got) != 2 || page.JSON["next_token"] != float64(2) {
			t.Fatalf("first page: %s", page.Raw)
		}
		page = s.Do(t, "GET", list+"?from=2&limit=2", admin.AccessToken, nil)
		if got, _ := page.JSON["event_reports"].([]any); len(got) != 1 || page.JSON["next_token"] != nil {
			t.Fatalf("last page: %s", page.Raw)
		}
		id := fmt.Sprint(int64(first["id"].(float64)))
		if res := s.Do(t, "GET", list+"/"+id, admin.AccessToken, nil); res.Status != 200 || res.JSON["reason"] != "spam" {
			t.Fatalf("one report: %d %s", res.Status, res.Raw)
		}
		requireStatusErrcode(t, s.Do(t, "GET", list, bob.AccessToken, nil), 403, "M_FORBIDDEN")
		requireStatusErrcode(t, s.Do(t, "DELETE", list+"/"+id, bob.AccessToken, nil), 403, "M_FORBIDDEN")
		requireStatusErrcode(t, s.Do(t, "GET", list+"?limit=-1", admin.AccessToken, nil), 400, "M_INVALID_PARAM")
		requireJSON(t, s.Do(t, "DELETE", list+"/"+id, admin.AccessToken, nil), `{}`)
		requireStatusErrcode(t, s.Do(t, "GET", list+"/"+id, admin.AccessToken, nil), 404, "M_NOT_FOUND")
		requireStatusErrcode(t, s.Do(t, "DELETE", list+"/"+id, admin.AccessToken, nil), 404, "M_NOT_FOUND")
		requireStatusErrcode(t, s.Do(t, "GET", list+"/abc", admin.AccessToken, nil), 404, "M_NOT_FOUND")
		// A room report's ID is not an event report's.
		rs, _, _ := s.Store.Read().Reports(ctx, storage.ReportRoom, 0, 1)
		requireStatusErrcode(t, s.Do(t, "GET", list+"/"+fmt.Sprint(rs[0].ID), admin.AccessToken, nil), 404, "M_NOT_FOUND")
		if res := s.Do(t, "GET", list, admin.AccessToken, nil); res.JSON["total"] != float64(2) {
			t.Fatalf("after the deletion: %s", res.Raw)
		}
	})
}
