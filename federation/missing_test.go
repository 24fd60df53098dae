package federation_test

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// An event of this server that the asking server may not see is served redacted by
// /get_missing_events, with its own event ID and a signature that still verifies: signed first,
// then redacted (signing the redacted form would hash its empty content: another event ID).
func TestMissingEventsRedactedKeepTheirID(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		ctx := context.Background()
		room := url.PathEscape(sr.roomID)
		if res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.history_visibility/", sr.alice.AccessToken,
			map[string]string{"history_visibility": "joined"}); res.Status != 200 {
			t.Fatalf("history visibility: %d %s", res.Status, res.Raw)
		}
		leave := sr.hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+room+"/leave", sr.bob.AccessToken, map[string]any{})
		if leave.Status != 200 {
			t.Fatalf("leave: %d %s", leave.Status, leave.Raw)
		}
		sr.aliceS.waitFor(t, sr.roomID, "bob's leave", func(evs []timelineEvent) bool { return hasMember(evs, sr.bob.UserID, "leave") })
		hidden := sendText(t, sr.hs1, sr.alice, sr.roomID, "while hs2 is out")
		join := sr.hs2.Do(t, "POST", "/_matrix/client/v3/join/"+room+"?via="+url.QueryEscape(sr.name1), sr.bob.AccessToken, map[string]any{})
		if join.Status != 200 {
			t.Fatalf("rejoin: %d %s", join.Status, join.Raw)
		}
		after := sendText(t, sr.hs1, sr.alice, sr.roomID, "back in")

		var resp struct {
			Events []json.RawMessage `json:"events"`
		}
		body := map[string]any{"earliest_events": []string{}, "latest_events": []string{after}, "limit": 10}
		// hs1 may take a moment to count hs2 in the room again.
		servertest.Eventually(t, 10*time.Second, func() error {
			return sr.hs2.Federation.Client().DoJSON(ctx, sr.name1, "POST", "/_matrix/federation/v1/get_missing_events/"+room, body, &resp)
		})
		v, _ := event.LookupVersion("10")
		var vr struct {
			RoomVersion string `json:"room_version"`
		}
		state := sr.hs1.Do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.create/", sr.alice.AccessToken, nil)
		if json.Unmarshal(state.Raw, &vr) == nil && vr.RoomVersion != "" {
			v, _ = event.LookupVersion(vr.RoomVersion)
		}
		found := false
		for _, raw := range resp.Events {
			p, err := event.Parse(v, raw)
			if err != nil {
				t.Fatalf("served event does not parse: %v: %s", err, raw)
			}
			if p.EventID != hidden {
				continue
			}
			found = true
			if string(p.Content) != "{}" {
				t.Errorf("the hidden message was served with its content: %s", raw)
			}
			if err := event.VerifyEventSignatures(ctx, v, p, sr.hs2.Federation.Keys().Key); err != nil {
				t.Errorf("the redacted event's signature does not verify: %v", err)
			}
		}
		if !found {
			t.Fatalf("the hidden message %s is not among the %d served events (under its own ID)", hidden, len(resp.Events))
		}
	})
}
