package clientapi_test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// deliveredBy looks for a dev.hearth.delivered receipt by user on event in a sync response.
func deliveredBy(res servertest.Response, roomID, eventID, user string) bool {
	var body struct {
		Rooms struct {
			Join map[string]struct {
				Ephemeral struct {
					Events []struct {
						Type    string                               `json:"type"`
						Content map[string]map[string]map[string]any `json:"content"`
					} `json:"events"`
				} `json:"ephemeral"`
			} `json:"join"`
		} `json:"rooms"`
	}
	_ = json.Unmarshal(res.Raw, &body)
	for _, e := range body.Rooms.Join[roomID].Ephemeral.Events {
		if e.Type == "m.receipt" && e.Content[eventID]["dev.hearth.delivered"][user] != nil {
			return true
		}
	}
	return false
}

// TestDeliveryReceipts: once bob (opted in) syncs a message, its sender sees a delivery receipt;
// carol, who did not opt in, leaves none.
func TestDeliveryReceipts(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		roomID := createRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		for _, u := range []servertest.User{bob, carol} {
			expect(t, s.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), u.AccessToken, map[string]any{}), 200, "")
		}
		expect(t, s.Do(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(bob.UserID)+"/account_data/dev.hearth.delivery_receipts",
			bob.AccessToken, map[string]any{"enabled": true}), 200, "")
		// Clients cannot post delivery receipts themselves.
		first := send(t, s, alice, roomID, "m0", map[string]any{"msgtype": "m.text", "body": "first"})
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/dev.hearth.delivered/"+url.PathEscape(first),
			bob.AccessToken, map[string]any{}), 400, "M_INVALID_PARAM")

		start := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil)
		since := start.Str("next_batch")
		msg := send(t, s, alice, roomID, "m1", map[string]any{"msgtype": "m.text", "body": "hello"})
		for _, u := range []servertest.User{bob, carol} {
			if res := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", u.AccessToken, nil); res.Status != 200 {
				t.Fatalf("sync: %d %s", res.Status, res.Raw)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		seenBob := false
		for !seenBob && time.Now().Before(deadline) {
			res := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=2000&since="+url.QueryEscape(since), alice.AccessToken, nil)
			if res.Status != 200 {
				t.Fatalf("alice sync: %d %s", res.Status, res.Raw)
			}
			seenBob = deliveredBy(res, roomID, msg, bob.UserID)
			if deliveredBy(res, roomID, msg, carol.UserID) {
				t.Fatal("carol did not opt in but left a delivery receipt")
			}
		}
		if !seenBob {
			t.Fatal("alice never saw bob's delivery receipt")
		}
		// From scratch (an initial sync) the receipt is there too, and carol's is not.
		res := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil)
		if !deliveredBy(res, roomID, msg, bob.UserID) || deliveredBy(res, roomID, msg, carol.UserID) {
			t.Fatalf("initial sync receipts: %s", res.Raw)
		}
	})
}
