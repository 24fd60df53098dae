package sync_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// TestRecentEventsServeWokenSyncs: the messages that wake a long poll come from the room writer's
// recent batches, not from storage, and are what storage holds (the same event as /messages, the
// sender's transaction ID included); after a redaction (the writer's serial path), a sync over the
// same range shows the event redacted; with other nodes writing (an external bus), storage is read.
func TestRecentEventsServeWokenSyncs(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		bob := s.Register(t, "bob", "password-bob")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		membership(t, s, bob, roomID, "join", nil)
		send(t, s, alice, roomID, "warm-up") // the room is in the writer's cache from here
		start := doSync(t, s, alice).NextBatch
		r := doSync(t, s, bob)

		woken := make(chan syncResp, 1)
		go func() { woken <- doSync(t, s, bob, "since", r.NextBatch, "timeout", "10000") }()
		waitParked(t, s, 1)
		reads := hsync.TimelineStoreReads(s.Sync)
		msgID := send(t, s, alice, roomID, "one")
		got := (<-woken).Rooms.Join[roomID].Timeline.Events
		if len(got) != 1 || got[0].EventID != msgID || got[0].body() != "one" {
			t.Fatalf("woken sync: %+v, want the message %s", got, msgID)
		}
		// The sender's own sync: its transaction ID, and the event as /messages (storage) has it.
		mine := doSync(t, s, alice, "since", start).Rooms.Join[roomID].Timeline.Events
		if n := hsync.TimelineStoreReads(s.Sync) - reads; n != 0 {
			t.Errorf("%d reads of storage for the new messages", n)
		}
		if len(mine) != 1 || mine[0].EventID != msgID || mine[0].Unsigned["transaction_id"] == nil {
			t.Fatalf("alice's sync: %+v", mine)
		}
		res := s.Do(t, "GET", roomPath(roomID, "/messages?dir=b&limit=1"), alice.AccessToken, nil)
		if res.Status != http.StatusOK {
			t.Fatalf("messages: %d %s", res.Status, res.Raw)
		}
		var page struct {
			Chunk []event `json:"chunk"`
		}
		if err := json.Unmarshal(res.Raw, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Chunk) != 1 {
			t.Fatalf("/messages: %s", res.Raw)
		}
		if e, m := page.Chunk[0], mine[0]; e.EventID != m.EventID || e.body() != m.body() || e.Sender != m.Sender || e.Type != m.Type ||
			fmt.Sprint(e.Content) != fmt.Sprint(m.Content) {
			t.Errorf("sync %+v, /messages %+v", m, e)
		}

		// A redaction: the same range now comes from storage, redacted.
		must(t, "redact", s.Do(t, "PUT", roomPath(roomID, "/redact/"+msgID+"/r1"), alice.AccessToken, map[string]any{}))
		after := doSync(t, s, bob, "since", r.NextBatch)
		again := after.Rooms.Join[roomID].Timeline.Events
		if len(again) < 1 || again[0].EventID != msgID || len(again[0].Content) != 0 || again[0].Unsigned["redacted_because"] == nil {
			t.Fatalf("after the redaction: %+v, want %s redacted", again, msgID)
		}

		// With other nodes writing to the database (an external bus), storage is read.
		send(t, s, alice, roomID, "two")
		reads = hsync.TimelineStoreReads(s.Sync)
		hsync.SetAlone(s.Sync, false)
		if got := doSync(t, s, bob, "since", after.NextBatch).Rooms.Join[roomID].Timeline.Events; len(got) != 1 || got[0].body() != "two" {
			t.Fatalf("with other nodes: %+v", got)
		}
		if hsync.TimelineStoreReads(s.Sync) == reads {
			t.Error("with other nodes, a sync took the events from the recent batches")
		}
	})
}
