package sync_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// The sync service keeps reads between syncs (shared room events and relations, unread counts,
// each user's memberships, lazy-loaded members sent, the delivery receipt opt-in). These tests
// change what a kept read holds right after it was taken, and check the next sync tells.

// TestCachedReadsRedaction: a redaction after the events, relations and unread counts of a sync
// were kept reaches the next incremental sync, and an initial sync shows the event redacted.
func TestCachedReadsRedaction(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		carol := s.Register(t, "carol", "password-carol")
		membership(t, s, carol, roomID, "join", nil)
		r0 := ephDo(t, s, bob)
		c0 := ephDo(t, s, carol)
		m1 := send(t, s, alice, roomID, "one")
		send(t, s, alice, roomID, "two")
		// Bob and carol read the same range of the room: one of them from the other's read.
		r1 := ephDo(t, s, bob, "since", r0.NextBatch)
		doSync(t, s, carol, "since", c0.NextBatch)
		if n := r1.Rooms.Join[roomID].Unread.NotificationCount; n != 2 {
			t.Fatalf("unread before the redaction: %d", n)
		}
		must(t, "redact", s.Do(t, "PUT", roomPath(roomID, "/redact/"+url.PathEscape(m1)+"/r1"), alice.AccessToken, map[string]any{}))
		// The next sync of bob counts one message, and carries the redaction.
		r2 := ephDo(t, s, bob, "since", r1.NextBatch, "timeout", "5000")
		if n := r2.Rooms.Join[roomID].Unread.NotificationCount; n != 1 {
			t.Errorf("unread after the redaction: %d, want 1", n)
		}
		next := doSync(t, s, bob, "since", r1.NextBatch, "timeout", "5000")
		if !hasType(next.Rooms.Join[roomID].Timeline.Events, "m.room.redaction") {
			t.Errorf("the redaction is not in the next sync: %+v", next.Rooms.Join[roomID].Timeline.Events)
		}
		// Carol, from scratch, sees the message redacted.
		full := doSync(t, s, carol, "filter", limitFilter(20))
		for _, e := range full.Rooms.Join[roomID].Timeline.Events {
			if e.EventID == m1 {
				if e.body() != "" || e.Unsigned["redacted_because"] == nil {
					t.Errorf("initial sync after the redaction: %+v", e)
				}
			}
		}
		// A reply in a thread after the parent was served shows in the parent's bundle from scratch.
		root := send(t, s, alice, roomID, "root")
		doSync(t, s, carol, "filter", limitFilter(20))
		must(t, "thread reply", s.Do(t, "PUT", roomPath(roomID, fmt.Sprintf("/send/m.room.message/t%d", txn.Add(1))), alice.AccessToken,
			map[string]any{"msgtype": "m.text", "body": "reply", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}))
		full = doSync(t, s, carol, "filter", limitFilter(20))
		for _, e := range full.Rooms.Join[roomID].Timeline.Events {
			if e.EventID == root {
				if rel, _ := e.Unsigned["m.relations"].(map[string]any); rel == nil || rel["m.thread"] == nil {
					t.Errorf("thread root without its summary after a reply: %+v", e.Unsigned)
				}
			}
		}
	})
}

// TestCachedReadsMembership: a user whose memberships were kept by an incremental sync sees an
// invite, a join, a leave and a forget in the next ones.
func TestCachedReadsMembership(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		r := doSync(t, s, bob)
		send(t, s, alice, roomID, "warm")
		r = doSync(t, s, bob, "since", r.NextBatch, "timeout", "5000")

		other := newRoom(t, s, alice, nil)
		membership(t, s, alice, other, "invite", map[string]any{"user_id": bob.UserID})
		r = doSync(t, s, bob, "since", r.NextBatch, "timeout", "5000")
		if _, ok := r.Rooms.Invite[other]; !ok {
			t.Fatalf("invite not in the next sync: %+v", r.Rooms)
		}
		membership(t, s, bob, other, "join", nil)
		r = doSync(t, s, bob, "since", r.NextBatch, "timeout", "5000")
		joined, ok := r.Rooms.Join[other]
		if !ok || findState(append(joined.State.Events, joined.Timeline.Events...), "m.room.create", "") == nil {
			t.Fatalf("join not in the next sync, or without the room's state: %+v", r.Rooms)
		}
		send(t, s, alice, other, "in the new room")
		r = doSync(t, s, bob, "since", r.NextBatch, "timeout", "5000")
		if got := bodies(r.Rooms.Join[other].Timeline.Events); len(got) != 1 {
			t.Fatalf("message in the new room: %v", got)
		}
		beforeLeave := r.NextBatch
		membership(t, s, bob, other, "leave", nil)
		r = doSync(t, s, bob, "since", r.NextBatch, "timeout", "5000")
		if _, ok := r.Rooms.Leave[other]; !ok {
			t.Fatalf("leave not in the next sync: %+v", r.Rooms)
		}
		send(t, s, alice, other, "after bob left")
		send(t, s, alice, roomID, "wake bob")
		r = doSync(t, s, bob, "since", r.NextBatch, "timeout", "5000")
		if _, ok := r.Rooms.Join[other]; ok {
			t.Fatalf("a room bob left is still joined: %+v", r.Rooms.Join[other])
		}
		// From a token before the leave the room is in rooms.leave, until bob forgets it.
		withLeave := `{"room":{"include_leave":true}}`
		if r := doSync(t, s, bob, "since", beforeLeave, "filter", withLeave); r.Rooms.Leave[other].Timeline.Events == nil {
			t.Fatalf("left room not in rooms.leave: %+v", r.Rooms)
		}
		must(t, "forget", s.Do(t, "POST", roomPath(other, "/forget"), bob.AccessToken, map[string]any{}))
		if r := doSync(t, s, bob, "since", beforeLeave, "filter", withLeave); r.Rooms.Leave[other].Timeline.Events != nil {
			t.Fatalf("a forgotten room in rooms.leave: %+v", r.Rooms.Leave)
		}
		if full := doSync(t, s, bob, "filter", withLeave); full.Rooms.Leave[other].Timeline.Events != nil {
			t.Fatalf("a forgotten room in an initial sync: %+v", full.Rooms.Leave[other])
		}
	})
}

// TestLazyMembersNotResent: with lazy_load_members a sender's member event comes once per device;
// a sync from an older token (a response that never arrived) gets it again, and so does another
// device, and a changed member event comes again.
func TestLazyMembersNotResent(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		// Timelines of one event: bob's initial sync carries his own join, not alice's member event.
		lazy := `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`
		memberIn := func(r syncResp) bool {
			return findState(r.Rooms.Join[roomID].State.Events, "m.room.member", alice.UserID) != nil
		}
		r0 := doSync(t, s, bob, "filter", lazy)
		send(t, s, alice, roomID, "a")
		r1 := doSync(t, s, bob, "filter", lazy, "since", r0.NextBatch, "timeout", "5000")
		if !memberIn(r1) {
			t.Fatalf("first message: alice's member event not in state: %+v", r1.Rooms.Join[roomID].State.Events)
		}
		send(t, s, alice, roomID, "b")
		r2 := doSync(t, s, bob, "filter", lazy, "since", r1.NextBatch, "timeout", "5000")
		if got := bodies(r2.Rooms.Join[roomID].Timeline.Events); len(got) != 1 || memberIn(r2) {
			t.Fatalf("second message: timeline %v, member event sent again: %v", got, memberIn(r2))
		}
		lazy10 := `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":10}}}`
		if again := doSync(t, s, bob, "filter", lazy10, "since", r0.NextBatch, "timeout", "5000"); !memberIn(again) {
			t.Fatalf("from the older token: alice's member event not in state")
		}
		other := s.Login(t, "bob", "password-bob")
		send(t, s, alice, roomID, "c")
		if o := doSync(t, s, other, "filter", lazy, "since", r2.NextBatch, "timeout", "5000"); !memberIn(o) {
			t.Fatalf("another device: alice's member event not in state")
		}
		// A new member event of alice (a display name) comes in the timeline; the state after it
		// is the client's, so the next message needs nothing.
		must(t, "displayname", s.Do(t, "PUT", csAPI+"/profile/"+url.PathEscape(alice.UserID)+"/displayname", alice.AccessToken,
			map[string]any{"displayname": "Alice A."}))
		r3 := doSync(t, s, bob, "filter", `{"room":{"state":{"lazy_load_members":true}}}`, "since", r2.NextBatch, "timeout", "5000")
		for !hasType(r3.Rooms.Join[roomID].Timeline.Events, "m.room.member") {
			r3 = doSync(t, s, bob, "filter", lazy, "since", r3.NextBatch, "timeout", "5000")
		}
		send(t, s, alice, roomID, "d")
		r4 := doSync(t, s, bob, "filter", lazy, "since", r3.NextBatch, "timeout", "5000")
		if memberIn(r4) {
			t.Errorf("after the member event in the timeline: sent again in state")
		}
	})
}

func hasType(evs []event, typ string) bool {
	for _, e := range evs {
		if e.Type == typ {
			return true
		}
	}
	return false
}

// TestDeliveryOptInCached: a user whose syncs left no delivery receipt (not opted in) leaves one
// as soon as they opt in.
func TestDeliveryOptInCached(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		a := doSync(t, s, alice)
		b := doSync(t, s, bob)
		send(t, s, alice, roomID, "before")
		b = doSync(t, s, bob, "since", b.NextBatch, "timeout", "5000")
		time.Sleep(100 * time.Millisecond) // the receipt goes out after the response
		must(t, "opt in", s.Do(t, "PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/dev.hearth.delivery_receipts",
			bob.AccessToken, map[string]any{"enabled": true}))
		msg := send(t, s, alice, roomID, "after")
		for seen := false; !seen; {
			b = doSync(t, s, bob, "since", b.NextBatch, "timeout", "5000")
			seen = len(bodies(b.Rooms.Join[roomID].Timeline.Events)) > 0
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			res := s.Do(t, "GET", syncPath("since", a.NextBatch, "timeout", "1000"), alice.AccessToken, nil)
			var r ephSync
			if err := json.Unmarshal(res.Raw, &r); err != nil {
				t.Fatal(err)
			}
			if rc := r.receiptsIn(roomID); rc[msg]["dev.hearth.delivered"] != nil {
				if _, ok := rc[msg]["dev.hearth.delivered"][bob.UserID]; ok {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("no delivery receipt of bob after opting in")
			}
		}
	})
}
