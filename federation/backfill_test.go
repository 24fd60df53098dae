package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// History over federation: a server that joins a room late backfills it for /messages, and serves
// /backfill to others.

// bfPage is one /messages answer.
type bfPage struct {
	Chunk []timelineEvent `json:"chunk"`
	Start string          `json:"start"`
	End   string          `json:"end"`
}

// bfPaginate reads /messages backwards from from until its end, limit events a page, and returns
// every event (newest first) and the number of pages.
func bfPaginate(t *testing.T, hs *servertest.Server, u servertest.User, roomID, from string, limit int) ([]timelineEvent, int) {
	t.Helper()
	var all []timelineEvent
	pages := 0
	for {
		q := url.Values{"dir": {"b"}, "limit": {fmt.Sprint(limit)}}
		if from != "" {
			q.Set("from", from)
		}
		res := hs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), u.AccessToken, nil)
		if res.Status != 200 {
			t.Fatalf("/messages from %q: %d %s", from, res.Status, res.Raw)
		}
		var p bfPage
		if err := json.Unmarshal(res.Raw, &p); err != nil {
			t.Fatal(err)
		}
		pages++
		all = append(all, p.Chunk...)
		if p.End == "" {
			return all, pages
		}
		if pages > 100 {
			t.Fatalf("/messages does not end: %d pages", pages)
		}
		from = p.End
	}
}

func bfHasType(evs []timelineEvent, typ string) bool {
	return slices.ContainsFunc(evs, func(e timelineEvent) bool { return e.Type == typ })
}

func TestBackfillHistory(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		roomID := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "History",
			"initial_state": []map[string]any{{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "shared"}}}})
		const n = 120
		var want []string
		for i := range n {
			body := fmt.Sprintf("before %d", i)
			sendText(t, hs1, alice, roomID, body)
			want = append(want, body)
		}

		// bob joins late: hs2 has the state and the join, no history.
		joinVia(t, hs2, bob, roomID, hs1.Config.ServerName)
		bobS := newSyncer(hs2, bob)
		bobS.waitFor(t, roomID, "his own join", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "join") })
		if got := messagesFrom(bobS.rooms[roomID], alice.UserID); len(got) != 0 {
			t.Fatalf("hs2 had history before backfill: %v", got)
		}

		// /messages backwards from bob's sync token: every message, in order, down to the
		// room's creation, over several pages.
		evs, pages := bfPaginate(t, hs2, bob, roomID, bobS.next, 30)
		slices.Reverse(evs)
		if got := messagesFrom(evs, alice.UserID); !slices.Equal(got, want) {
			t.Fatalf("bob's history has %d messages, want %d in order: %v", len(got), n, got)
		}
		if pages < 5 {
			t.Errorf("%d pages for %d events of 30 a page", pages, len(evs))
		}
		if evs[0].Type != "m.room.create" {
			t.Errorf("history starts with %s %s, want m.room.create", evs[0].Type, evs[0].EventID)
		}
		noDuplicates(t, "bob's /messages", evs)
		if !hasMember(evs, alice.UserID, "join") || !hasMember(evs, bob.UserID, "join") {
			t.Errorf("history lacks alice's or bob's join: %s", describe(evs))
		}

		// The backfilled events are not new events: neither an incremental nor an initial /sync
		// carries them, and the room's state is what it was.
		bobS.once(t, 0)
		if got := messagesFrom(bobS.rooms[roomID], alice.UserID); len(got) != 0 {
			t.Errorf("/sync after backfill carried old messages: %v", got)
		}
		fresh := newSyncer(hs2, bob)
		fresh.once(t, 0)
		if got := messagesFrom(fresh.rooms[roomID], alice.UserID); len(got) != 0 {
			t.Errorf("initial /sync after backfill carried old messages: %v", got)
		}
		name := hs2.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name/", bob.AccessToken, nil)
		if name.Status != 200 || name.Str("name") != "History" {
			t.Errorf("room name on hs2 after backfill: %d %s", name.Status, name.Raw)
		}
		exts, err := hs2.Store.Read().ForwardExtremities(context.Background(), roomID)
		if err != nil || len(exts) != 1 {
			t.Errorf("forward extremities after backfill: %v, %v", exts, err)
		}

		// The room goes on: new messages reach bob live, and a second pagination reads what
		// hs2 holds now (the same history, and the new message first).
		sendText(t, hs1, alice, roomID, "after")
		bobS.waitFor(t, roomID, "the new message", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, alice.UserID), "after")
		})
		again, _ := bfPaginate(t, hs2, bob, roomID, bobS.next, 100)
		slices.Reverse(again)
		if got := messagesFrom(again, alice.UserID); !slices.Equal(got, append(slices.Clone(want), "after")) {
			t.Errorf("second pagination: %d messages: %v", len(got), got)
		}
	})
}

func TestBackfillJoinedVisibility(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		roomID := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat",
			"initial_state": []map[string]any{{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
		var secret []string
		for i := range 10 {
			secret = append(secret, sendText(t, hs1, alice, roomID, fmt.Sprintf("secret %d", i)))
		}
		joinVia(t, hs2, bob, roomID, hs1.Config.ServerName)
		bobS := newSyncer(hs2, bob)
		bobS.waitFor(t, roomID, "his own join", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "join") })
		sendText(t, hs1, alice, roomID, "visible")
		bobS.waitFor(t, roomID, "a message after his join", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, alice.UserID), "visible")
		})

		evs, _ := bfPaginate(t, hs2, bob, roomID, bobS.next, 7)
		if got := messagesFrom(evs, alice.UserID); !slices.Equal(got, []string{"visible"}) {
			t.Errorf("bob sees %v, want only the message after his join", got)
		}
		if !bfHasType(evs, "m.room.create") {
			t.Errorf("pagination did not reach the room's creation: %s", describe(evs))
		}
		// hs2 did backfill the messages (redacted: hs1 sends hs2 what it may not see redacted),
		// and bob cannot read them one by one either.
		for _, id := range secret {
			if e, ok := storedEvent(t, hs2, id); !ok || e.StreamPos >= 0 || strings.Contains(string(e.ClientJSON), "secret") {
				t.Fatalf("secret message %s on hs2: stored %v at %d: %s", id, ok, e.StreamPos, e.ClientJSON)
			}
			res := hs2.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(id), bob.AccessToken, nil)
			if res.Status != 404 {
				t.Errorf("bob reads %s from before his join: %d %s", id, res.Status, res.Raw)
			}
		}
	})
}

// bfRequest is GET /backfill on hs1, signed by from.
func bfRequest(from *servertest.Server, to, roomID string, v []string, limit string) ([]json.RawMessage, error) {
	q := url.Values{"v": v}
	if limit != "" {
		q.Set("limit", limit)
	}
	var resp struct {
		Origin string            `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
	}
	err := from.Federation.Client().DoJSON(context.Background(), to, "GET", "/_matrix/federation/v1/backfill/"+url.PathEscape(roomID)+"?"+q.Encode(), nil, &resp)
	if err == nil && resp.Origin != to {
		err = fmt.Errorf("origin %q", resp.Origin)
	}
	return resp.PDUs, err
}

func bfWantError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	if !isFedError(err, status, code) {
		t.Errorf("%s: %v, want %d %s", what, err, status, code)
	}
}

func TestBackfillServed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		hs3 := servertest.Start(t, backend, servertest.Federated(t, sr.ca, ip3), fastRetry)
		var ids []string
		for i := range 8 {
			ids = append(ids, sendText(t, sr.hs1, sr.alice, sr.roomID, fmt.Sprintf("m%d", i)))
		}
		last := ids[len(ids)-1]

		// limit counts the given event; the events come deepest first, each the prev event of
		// the one before (the room is a chain).
		pdus, err := bfRequest(sr.hs2, sr.name1, sr.roomID, []string{last}, "5")
		if err != nil || len(pdus) != 5 {
			t.Fatalf("backfill limit 5: %d PDUs, %v", len(pdus), err)
		}
		var got []string
		for _, raw := range pdus {
			var p struct {
				Content    struct{ Body string } `json:"content"`
				PrevEvents []string              `json:"prev_events"`
				Signatures map[string]any        `json:"signatures"`
			}
			_ = json.Unmarshal(raw, &p)
			if p.Signatures[sr.name1] == nil {
				t.Errorf("hs1's event served unsigned: %s", raw)
			}
			got = append(got, p.Content.Body)
		}
		if !slices.Equal(got, []string{"m7", "m6", "m5", "m4", "m3"}) {
			t.Errorf("backfill from m7, limit 5: %v", got)
		}
		if pdus, err := bfRequest(sr.hs2, sr.name1, sr.roomID, []string{last}, "100000"); err != nil || len(pdus) == 0 || len(pdus) > 100 {
			t.Errorf("backfill with a huge limit: %d PDUs, %v", len(pdus), err)
		}
		if pdus, err := bfRequest(sr.hs2, sr.name1, sr.roomID, []string{last}, "0"); err != nil || len(pdus) != 0 {
			t.Errorf("backfill limit 0: %d PDUs, %v", len(pdus), err)
		}

		// Refused: a server with no member in the room, an unknown room, bad parameters.
		_, err = bfRequest(hs3, sr.name1, sr.roomID, []string{last}, "5")
		bfWantError(t, "server not in the room", err, 403, "M_FORBIDDEN")
		_, err = bfRequest(sr.hs2, sr.name1, "!unknown:"+sr.name1, []string{last}, "5")
		bfWantError(t, "unknown room", err, 404, "M_NOT_FOUND")
		_, err = bfRequest(sr.hs2, sr.name1, sr.roomID, []string{last}, "")
		bfWantError(t, "no limit", err, 400, "M_MISSING_PARAM")
		_, err = bfRequest(sr.hs2, sr.name1, sr.roomID, []string{last}, "x")
		bfWantError(t, "bad limit", err, 400, "M_INVALID_PARAM")
		_, err = bfRequest(sr.hs2, sr.name1, sr.roomID, nil, "5")
		bfWantError(t, "no v", err, 400, "M_MISSING_PARAM")
	})
}

// bfTamper replaces an event's stored PDU on hs (what it will serve) with edit's result.
func bfTamper(t *testing.T, hs *servertest.Server, eventID string, edit func(m map[string]json.RawMessage)) {
	t.Helper()
	ctx := context.Background()
	e, err := hs.Store.Read().Event(ctx, eventID)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(e.PDU, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	raw, _ := json.Marshal(m)
	if err := hs.Store.Write(ctx, func(c storage.Conn) error { return c.SetRedactedBy(ctx, eventID, "", raw, e.ClientJSON) }); err != nil {
		t.Fatal(err)
	}
}

func TestBackfillDropsForgedEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		var fromBob []string
		for i := range 6 {
			fromBob = append(fromBob, sendText(t, sr.hs2, sr.bob, sr.roomID, fmt.Sprintf("bob %d", i)))
		}
		sr.aliceS.waitFor(t, sr.roomID, "bob's messages", func(evs []timelineEvent) bool { return len(messagesFrom(evs, sr.bob.UserID)) == 6 })
		sendText(t, sr.hs1, sr.alice, sr.roomID, "alice")
		// bob leaves, so that hs1 is the only server to backfill from.
		if res := sr.hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(sr.roomID)+"/leave", sr.bob.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("leave: %d %s", res.Status, res.Raw)
		}
		sr.aliceS.waitFor(t, sr.roomID, "bob's leave", func(evs []timelineEvent) bool { return hasMember(evs, sr.bob.UserID, "leave") })

		// hs1 now serves bob 2 with a broken signature and bob 4 with changed content.
		bfTamper(t, sr.hs1, fromBob[2], func(m map[string]json.RawMessage) {
			var sigs map[string]map[string]string
			_ = json.Unmarshal(m["signatures"], &sigs)
			for k, sig := range sigs[sr.name2] {
				// A different first character (a signature may start with "A" already).
				first := "A"
				if sig[0] == 'A' {
					first = "B"
				}
				sigs[sr.name2][k] = first + sig[1:]
			}
			m["signatures"], _ = json.Marshal(sigs)
		})
		bfTamper(t, sr.hs1, fromBob[4], func(m map[string]json.RawMessage) {
			m["content"], _ = json.Marshal(msg("tampered"))
		})

		hs3 := servertest.Start(t, backend, servertest.Federated(t, sr.ca, ip3), fastRetry)
		carol := hs3.Register(t, "carol", "carol-password-1")
		joinVia(t, hs3, carol, sr.roomID, sr.name1)
		carolS := newSyncer(hs3, carol)
		carolS.waitFor(t, sr.roomID, "her own join", func(evs []timelineEvent) bool { return hasMember(evs, carol.UserID, "join") })

		evs, _ := bfPaginate(t, hs3, carol, sr.roomID, carolS.next, 10)
		slices.Reverse(evs)
		if got := messagesFrom(evs, sr.bob.UserID); !slices.Equal(got, []string{"bob 0", "bob 1", "bob 3", "", "bob 5"}) {
			t.Errorf("carol's history of bob: %q, want bob 2 dropped and bob 4 redacted; %s", got, describe(evs))
		}
		if got := messagesFrom(evs, sr.alice.UserID); !slices.Equal(got, []string{"alice"}) || evs[0].Type != "m.room.create" {
			t.Errorf("carol's history of alice: %q, from %s", got, evs[0].Type)
		}
		if _, ok := storedEvent(t, hs3, fromBob[2]); ok {
			t.Errorf("the event with a bad signature was stored")
		}
	})
}
