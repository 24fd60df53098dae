package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/url"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The inbound PDU pipeline against events hs2 "sends" that a test built by hand: forged ones are
// dropped, redacted, rejected or soft-failed, as "Checks performed on receipt of a PDU" asks.

// forge builds an event of sender (a user of hs2) in the room on hs1, placed after hs1's
// forward extremities (or after prev), with the auth events the current state (or the given
// state) selects, signed with key (hs2's key unless given).
func (sr *sharedRoom) forge(t testing.TB, sender, typ string, stateKey *string, content any, prev []string, key ed25519.PrivateKey) *event.PDU {
	t.Helper()
	ctx := context.Background()
	v, err := sr.hs1.Rooms.RoomVersion(ctx, sr.roomID)
	if err != nil {
		t.Fatal(err)
	}
	c := sr.hs1.Store.Read()
	if prev == nil {
		if prev, err = c.ForwardExtremities(ctx, sr.roomID); err != nil {
			t.Fatal(err)
		}
	}
	prevEvs, err := c.Events(ctx, prev)
	if err != nil || len(prevEvs) != len(prev) {
		t.Fatalf("prev events %v: %v", prev, err)
	}
	var depth, group int64
	for _, e := range prevEvs {
		depth, group = max(depth, e.Depth), max(group, e.StateGroup)
	}
	state, err := c.StateGroup(ctx, group) // the state after the (last) prev event
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(content)
	draft := &event.PDU{Type: typ, StateKey: stateKey, Sender: sender, Content: raw, Version: v}
	var auth []string
	for _, k := range room.AuthEventsNeeded(v, draft) {
		if id := state[storage.StateKey{Type: k.Type, StateKey: k.StateKey}]; id != "" {
			auth = append(auth, id)
		}
	}
	if key == nil {
		key = sr.hs2.Key.Private
	}
	p, err := event.Build(v, event.Proto{RoomID: sr.roomID, Sender: sender, Type: typ, StateKey: stateKey, Content: raw,
		PrevEvents: prev, AuthEvents: auth, Depth: depth + 1, OriginServerTS: 1_700_000_000_000},
		sr.name2, sr.hs2.Key.ID, key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sendAs sends PDUs to hs1 in a transaction signed by hs2, and returns pdus of the response.
func (sr *sharedRoom) sendAs(t testing.TB, txnID string, pdus ...json.RawMessage) map[string]struct {
	Error string `json:"error"`
} {
	t.Helper()
	body := map[string]any{"origin": sr.name2, "origin_server_ts": 1, "pdus": pdus}
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := sr.hs2.Federation.Client().DoJSON(context.Background(), sr.name1, "PUT", "/_matrix/federation/v1/send/"+url.PathEscape(txnID), body, &resp); err != nil {
		t.Fatalf("PUT /send/%s: %v", txnID, err)
	}
	return resp.PDUs
}

func storedEvent(t *testing.T, hs *servertest.Server, id string) (storage.Event, bool) {
	t.Helper()
	e, err := hs.Store.Read().Event(context.Background(), id)
	if err == storage.ErrNotFound {
		return e, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return e, true
}

func msg(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

func TestInboundPDUChecks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		bob := sr.bob.UserID

		// A valid event is accepted.
		good := sr.forge(t, bob, "m.room.message", nil, msg("good"), nil, nil)
		if res := sr.sendAs(t, "t1", good.Raw); res[good.EventID].Error != "" {
			t.Fatalf("valid event: %+v", res)
		}

		// Bad signature: signed with a key that is not hs2's (under hs2's key ID): dropped.
		_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
		forged := sr.forge(t, bob, "m.room.message", nil, msg("forged signature"), nil, otherKey)
		if res := sr.sendAs(t, "t2", forged.Raw); res[forged.EventID].Error == "" {
			t.Errorf("bad signature accepted: %+v", res)
		}
		if _, ok := storedEvent(t, sr.hs1, forged.EventID); ok {
			t.Errorf("event with a bad signature was stored")
		}

		// Bad content hash: the content was changed after signing (the signature covers only the
		// redacted form, so it still verifies): stored redacted.
		orig := sr.forge(t, bob, "m.room.message", nil, msg("original"), nil, nil)
		var m map[string]json.RawMessage
		_ = json.Unmarshal(orig.Raw, &m)
		m["content"], _ = json.Marshal(msg("tampered"))
		tampered, _ := json.Marshal(m)
		if res := sr.sendAs(t, "t3", tampered); res[orig.EventID].Error != "" {
			t.Fatalf("event with a bad hash not processed: %+v", res)
		}
		if e, ok := storedEvent(t, sr.hs1, orig.EventID); !ok || string(e.ClientJSON) == "" ||
			json.Unmarshal(e.ClientJSON, &m) != nil || string(m["content"]) != "{}" {
			t.Errorf("event with a bad content hash stored as %s, want redacted (content {})", e.ClientJSON)
		}

		// Fails the auth rules: bob (power 0) changes the power levels; a user who never joined
		// sends a message. Both rejected: stored as such, never shown.
		pl := sr.forge(t, bob, "m.room.power_levels", ptr(""), map[string]any{"users": map[string]int{bob: 100}}, nil, nil)
		stranger := sr.forge(t, "@mallory:"+sr.name2, "m.room.message", nil, msg("not a member"), nil, nil)
		res := sr.sendAs(t, "t4", pl.Raw, stranger.Raw)
		for _, p := range []*event.PDU{pl, stranger} {
			if res[p.EventID].Error == "" {
				t.Errorf("event failing auth accepted: %s %+v", p.Type, res)
			}
			if e, ok := storedEvent(t, sr.hs1, p.EventID); !ok || !e.Rejected || e.StreamPos != 0 {
				t.Errorf("event failing auth: stored %v, rejected %v, stream pos %d", ok, e.Rejected, e.StreamPos)
			}
		}

		// Idempotent transactions: the same txn ID again gets the first answer and is not
		// processed again, even with other content; the same event in another transaction is
		// stored once.
		again := sr.forge(t, bob, "m.room.message", nil, msg("again"), nil, nil)
		first := sr.sendAs(t, "dup", again.Raw)
		other := sr.forge(t, bob, "m.room.message", nil, msg("in a repeated txn"), []string{again.EventID}, nil)
		second := sr.sendAs(t, "dup", other.Raw)
		if _, ok := second[other.EventID]; ok || len(second) != len(first) || second[again.EventID] != first[again.EventID] {
			t.Errorf("repeated txn: first %+v, second %+v", first, second)
		}
		if _, ok := storedEvent(t, sr.hs1, other.EventID); ok {
			t.Errorf("the repeated txn was processed again")
		}
		if res := sr.sendAs(t, "dup-2", again.Raw); res[again.EventID].Error != "" {
			t.Errorf("a known event in a new txn: %+v", res)
		}

		// Soft failure: alice bans bob; an event of bob's placed before the ban passes the auth
		// rules at its place in the graph but not against the current state: stored, not shown.
		exts, _ := sr.hs1.Store.Read().ForwardExtremities(context.Background(), sr.roomID)
		if r := sr.hs1.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(sr.roomID)+"/ban", sr.alice.AccessToken,
			map[string]any{"user_id": bob}); r.Status != 200 {
			t.Fatalf("ban: %d %s", r.Status, r.Raw)
		}
		evading := sr.forge(t, bob, "m.room.message", nil, msg("evading the ban"), exts, nil)
		if res := sr.sendAs(t, "t5", evading.Raw); res[evading.EventID].Error != "" {
			t.Errorf("soft-failed event reported as refused: %+v", res)
		}
		if e, ok := storedEvent(t, sr.hs1, evading.EventID); !ok || !e.SoftFailed || e.Rejected {
			t.Errorf("ban evasion: stored %v, soft failed %v, rejected %v", ok, e.SoftFailed, e.Rejected)
		}
		if exts, _ := sr.hs1.Store.Read().ForwardExtremities(context.Background(), sr.roomID); slices.Contains(exts, evading.EventID) {
			t.Errorf("a soft-failed event became a forward extremity")
		}

		// What alice sees: the valid events once each, the tampered one redacted, none of the
		// others.
		sr.aliceS.waitFor(t, sr.roomID, "the ban", func(evs []timelineEvent) bool { return hasMember(evs, bob, "ban") })
		evs := sr.aliceS.rooms[sr.roomID]
		noDuplicates(t, "alice", evs)
		if got := messagesFrom(evs, bob); !slices.Equal(got, []string{"good", "", "again"}) {
			t.Errorf("alice sees bob's messages %q, want good, the redacted one, again", got)
		}
		for _, e := range evs {
			if e.EventID == forged.EventID || e.EventID == pl.EventID || e.EventID == stranger.EventID ||
				e.EventID == other.EventID || e.EventID == evading.EventID {
				t.Errorf("alice sees %s (%q), which was refused", e.EventID, e.body())
			}
		}
	})
}

func ptr(s string) *string { return &s }

// TestMissingEventsFetched: hs1 gets events whose prev events it lacks (hs2's queue lost them);
// it fetches them from hs2 with /get_missing_events and alice sees all five, in order.
func TestMissingEventsFetched(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		ctx := context.Background()
		sr.hs1.Stop()
		want := []string{"one", "two", "three", "four", "five"}
		var ids []string
		for _, b := range want {
			ids = append(ids, sendText(t, sr.hs2, sr.bob, sr.roomID, b))
		}
		// Drop the first two from hs2's queue: hs1 gets three, four and five in one transaction,
		// with a gap before three.
		e, err := sr.hs2.Store.Read().Event(ctx, ids[2])
		if err != nil {
			t.Fatal(err)
		}
		if err := sr.hs2.Store.Write(ctx, func(c storage.Conn) error { return c.DeleteOutbox(ctx, sr.name1, e.StreamPos-1) }); err != nil {
			t.Fatal(err)
		}
		sr.hs1 = sr.hs1.Restart(t)
		sr.aliceS.hs = sr.hs1
		sr.hs2.Federation.Sender().Alive(sr.name1)
		sr.aliceS.waitFor(t, sr.roomID, "bob's messages", func(evs []timelineEvent) bool {
			return len(messagesFrom(evs, sr.bob.UserID)) >= len(want)
		})
		sr.aliceS.once(t, 200)
		if got := messagesFrom(sr.aliceS.rooms[sr.roomID], sr.bob.UserID); !slices.Equal(got, want) {
			t.Errorf("alice sees %q", got)
		}
		noDuplicates(t, "alice", sr.aliceS.rooms[sr.roomID])
	})
}
