package federation_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// Server ACLs: alice@hs1 sets m.room.server_acl in rooms bob@hs2 is in; hs1 then refuses hs2 on
// the endpoints of those rooms, and only those.

// setACL sets the room's m.room.server_acl as alice and waits until bob's server has it (hs1 still
// sends the room's events to hs2 while bob is joined) and hs1's queue is empty.
func (sr *sharedRoom) setACL(t *testing.T, roomID string, content map[string]any) string {
	t.Helper()
	id := sr.putACL(t, roomID, content)
	sr.bobS.waitFor(t, roomID, "the server ACL "+id, func(evs []timelineEvent) bool {
		return slices.ContainsFunc(evs, func(e timelineEvent) bool { return e.EventID == id })
	})
	return id
}

// putACL sets the room's m.room.server_acl as alice and waits until hs1 sent it to hs2.
func (sr *sharedRoom) putACL(t *testing.T, roomID string, content map[string]any) string {
	t.Helper()
	res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.server_acl/", sr.alice.AccessToken, content)
	if res.Status != 200 {
		t.Fatalf("PUT m.room.server_acl %v: %d %s", content, res.Status, res.Raw)
	}
	id := res.Str("event_id")
	waitQueueEmpty(t, sr.hs1, sr.name2)
	return id
}

// fedStatus makes a request from hs (signed by it) to hs1 and returns the status and errcode
// (200 and "" on success).
func fedStatus(t *testing.T, from *servertest.Server, to, method, path string, body any) (int, string) {
	t.Helper()
	var out any
	err := from.Federation.Client().DoJSON(context.Background(), to, method, path, body, &out)
	var fe *fedclient.Error
	switch {
	case err == nil:
		return 200, ""
	case errors.As(err, &fe):
		return fe.Status, fe.Code
	}
	t.Fatalf("%s %s: %v", method, path, err)
	return 0, ""
}

// sendOne sends one event of bob's, forged in roomID on hs1's extremities, in a transaction from
// hs2; it returns the event ID and the error of its entry.
func (sr *sharedRoom) sendOne(t *testing.T, roomID, txnID, body string) (string, string) {
	t.Helper()
	saved := sr.roomID
	sr.roomID = roomID
	p := sr.forge(t, sr.bob.UserID, "m.room.message", nil, msg(body), nil, nil)
	sr.roomID = saved
	return p.EventID, sr.sendAs(t, txnID, p.Raw)[p.EventID].Error
}

func TestServerACL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		ctx := context.Background()
		bob := sr.bob.UserID

		// A second room shared by both, without an ACL.
		other := createRoom(t, sr.hs1, sr.alice, map[string]any{"preset": "public_chat"})
		joinVia(t, sr.hs2, sr.bob, other, sr.name1)
		sr.aliceS.waitFor(t, other, "bob's join", func(evs []timelineEvent) bool { return hasMember(evs, bob, "join") })

		// alice denies hs2 by its host (the port is not part of ACL matching).
		aclID := sr.setACL(t, sr.roomID, map[string]any{"allow": []string{"*"}, "deny": []string{"example.org", sr.hs2IP}})

		// hs2's PDUs for the room are dropped, each with an error entry, and not stored.
		id, errText := sr.sendOne(t, sr.roomID, "acl1", "from a denied server")
		if !strings.Contains(errText, "M_FORBIDDEN") {
			t.Errorf("PDU of a denied server: entry %q, want an M_FORBIDDEN error", errText)
		}
		if _, ok := storedEvent(t, sr.hs1, id); ok {
			t.Error("hs1 stored a PDU of a server the room's ACL denies")
		}

		// Every room endpoint refuses hs2 with 403 M_FORBIDDEN.
		room := url.PathEscape(sr.roomID)
		for _, req := range []struct{ method, path string }{
			{"GET", "/_matrix/federation/v1/make_join/" + room + "/" + url.PathEscape(bob) + "?ver=10&ver=11&ver=12"},
			{"GET", "/_matrix/federation/v1/make_leave/" + room + "/" + url.PathEscape(bob)},
			{"PUT", "/_matrix/federation/v2/send_leave/" + room + "/" + url.PathEscape("$x")},
			{"PUT", "/_matrix/federation/v2/send_join/" + room + "/" + url.PathEscape("$x")},
			{"PUT", "/_matrix/federation/v2/invite/" + room + "/" + url.PathEscape("$x")},
			{"GET", "/_matrix/federation/v1/state_ids/" + room + "?event_id=" + url.QueryEscape(aclID)},
			{"GET", "/_matrix/federation/v1/state/" + room + "?event_id=" + url.QueryEscape(aclID)},
			{"GET", "/_matrix/federation/v1/event_auth/" + room + "/" + url.PathEscape(aclID)},
			{"POST", "/_matrix/federation/v1/get_missing_events/" + room},
			{"GET", "/_matrix/federation/v1/event/" + url.PathEscape(aclID)},
		} {
			var body any
			if req.method != "GET" {
				body = map[string]any{}
			}
			if status, code := fedStatus(t, sr.hs2, sr.name1, req.method, req.path, body); status != http.StatusForbidden || code != "M_FORBIDDEN" {
				t.Errorf("%s %s from a denied server: %d %s, want 403 M_FORBIDDEN", req.method, req.path, status, code)
			}
		}

		// hs1 still sends the room's events to hs2 while bob is joined ("Servers should still
		// send events to denied servers if they are still residents of the room").
		sendText(t, sr.hs1, sr.alice, sr.roomID, "alice after the ACL")
		sr.bobS.waitFor(t, sr.roomID, "alice's message after the ACL", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, sr.alice.UserID), "alice after the ACL")
		})

		// The other room is not affected.
		if _, errText := sr.sendOne(t, other, "acl2", "in the other room"); errText != "" {
			t.Errorf("PDU for a room without an ACL: %q", errText)
		}
		if status, code := fedStatus(t, sr.hs2, sr.name1, "GET", "/_matrix/federation/v1/make_leave/"+url.PathEscape(other)+"/"+url.PathEscape(bob), nil); status != 200 {
			t.Errorf("make_leave in a room without an ACL: %d %s", status, code)
		}

		// The ACL applies to the server that sends a transaction, not to the events' senders: hs3,
		// which the ACL allows, relays an event of bob's, and hs1 accepts it.
		hs3 := servertest.Start(t, backend, servertest.Federated(t, sr.ca, ip3), fastRetry)
		relayed := sr.forge(t, bob, "m.room.message", nil, msg("relayed by hs3"), nil, nil)
		var resp struct {
			PDUs map[string]struct {
				Error string `json:"error"`
			} `json:"pdus"`
		}
		txn := map[string]any{"origin": hs3.Config.ServerName, "origin_server_ts": 1, "pdus": []any{relayed.Raw}}
		if err := hs3.Federation.Client().DoJSON(ctx, sr.name1, "PUT", "/_matrix/federation/v1/send/relay1", txn, &resp); err != nil {
			t.Fatal(err)
		}
		if e := resp.PDUs[relayed.EventID].Error; e != "" {
			t.Errorf("bob's event relayed by an allowed server: %q", e)
		}
		if _, ok := storedEvent(t, sr.hs1, relayed.EventID); !ok {
			t.Error("bob's event relayed by an allowed server was not stored")
		}

		// A new ACL that allows hs2 again takes effect at once.
		sr.setACL(t, sr.roomID, map[string]any{"allow": []string{"*"}, "deny": []string{"example.org"}})
		if _, errText := sr.sendOne(t, sr.roomID, "acl3", "allowed again"); errText != "" {
			t.Errorf("PDU after the ACL allowed hs2 again: %q", errText)
		}
		if status, code := fedStatus(t, sr.hs2, sr.name1, "GET", "/_matrix/federation/v1/make_leave/"+room+"/"+url.PathEscape(bob), nil); status != 200 {
			t.Errorf("make_leave after the ACL allowed hs2 again: %d %s", status, code)
		}

		// allow_ip_literals false denies hs2, whose name is an IP literal (127.0.0.x:port). hs1's
		// own users still send (the ACL applies to other servers' requests), and hs1 still sends
		// to hs2, but hs2 drops what hs1 sends: hs1's name is an IP literal too.
		ipACL := sr.putACL(t, other, map[string]any{"allow": []string{"*"}, "allow_ip_literals": false})
		if _, errText := sr.sendOne(t, other, "acl4", "from an IP literal"); !strings.Contains(errText, "M_FORBIDDEN") {
			t.Errorf("PDU of an IP-literal server with allow_ip_literals false: %q", errText)
		}
		if status, code := fedStatus(t, sr.hs2, sr.name1, "GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(other)+"?event_id="+url.QueryEscape(ipACL), nil); status != http.StatusForbidden || code != "M_FORBIDDEN" {
			t.Errorf("state_ids with allow_ip_literals false: %d %s", status, code)
		}

		// An ACL denying hs1 itself is accepted from alice (the spec allows it) and reaches hs2,
		// which then does not ask hs1 for the room's past (hs1 would answer: it allows hs2).
		selfDeny := sr.setACL(t, sr.roomID, map[string]any{"allow": []string{"*"}, "deny": []string{ip1}})
		if n, err := sr.hs2.Federation.Backfill(ctx, sr.roomID, []string{sr.name1}, []string{selfDeny}, 10); err == nil || n != 0 {
			t.Errorf("hs2 backfilled from a server the room's ACL denies: %d events, err %v", n, err)
		}

		// Redacting the ACL leaves content {}: no allow entry, so every server is denied (the
		// cache must not keep the unredacted ACL).
		red := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/redact/"+url.PathEscape(selfDeny)+"/r1", sr.alice.AccessToken, map[string]any{})
		if red.Status != 200 {
			t.Fatalf("redact the ACL: %d %s", red.Status, red.Raw)
		}
		if status, code := fedStatus(t, sr.hs2, sr.name1, "GET", "/_matrix/federation/v1/make_leave/"+room+"/"+url.PathEscape(bob), nil); status != http.StatusForbidden || code != "M_FORBIDDEN" {
			t.Errorf("make_leave after the ACL was redacted: %d %s, want 403 M_FORBIDDEN", status, code)
		}
	})
}
