package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Typing, read receipts and presence between two of our servers, and the checks on what another
// server may claim.

// ephPresence is the content of an m.presence event in /sync or GET /presence.
type ephPresence struct {
	Presence        string `json:"presence"`
	StatusMsg       string `json:"status_msg"`
	CurrentlyActive bool   `json:"currently_active"`
	LastActiveAgo   *int64 `json:"last_active_ago"`
}

// ephFollower follows one user's /sync and keeps what it saw of typing, receipts and presence.
type ephFollower struct {
	hs       *servertest.Server
	user     servertest.User
	next     string
	typing   map[string][]string    // room → the latest typing list
	receipts map[string]bool        // "room event type user"
	presence map[string]ephPresence // user → the latest presence
}

func newEphFollower(hs *servertest.Server, u servertest.User) *ephFollower {
	return &ephFollower{hs: hs, user: u, typing: map[string][]string{}, receipts: map[string]bool{}, presence: map[string]ephPresence{}}
}

func (f *ephFollower) once(t *testing.T) {
	t.Helper()
	var body syncBody
	syncOnce(t, f.hs, f.user, f.next, "", 500, &body)
	for _, e := range body.Presence.Events {
		var p ephPresence
		_ = json.Unmarshal(e.Content, &p)
		f.presence[e.Sender] = p
	}
	for roomID, r := range body.Rooms.Join {
		for _, e := range r.Ephemeral.Events {
			switch e.Type {
			case "m.typing":
				var c struct {
					UserIDs []string `json:"user_ids"`
				}
				_ = json.Unmarshal(e.Content, &c)
				f.typing[roomID] = c.UserIDs
			case "m.receipt":
				var c map[string]map[string]map[string]json.RawMessage
				_ = json.Unmarshal(e.Content, &c)
				for ev, types := range c {
					for typ, users := range types {
						for u := range users {
							f.receipts[roomID+" "+ev+" "+typ+" "+u] = true
						}
					}
				}
			}
		}
	}
	f.next = body.NextBatch
}

// waitFor syncs until cond holds (20 s at most).
func (f *ephFollower) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	syncUntil(t, f.user.UserID+": "+what, cond, func() { f.once(t) }, func() string {
		return fmt.Sprintf("typing %v, receipts %v, presence %v", f.typing, f.receipts, f.presence)
	})
}

func typingEDUFor(roomID, userID string, typing bool) map[string]any {
	return map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": roomID, "user_id": userID, "typing": typing}}
}

func receiptEDUFor(roomID string, byUser map[string]string) map[string]any {
	reads := map[string]any{}
	for u, ev := range byUser {
		reads[u] = map[string]any{"event_ids": []string{ev}, "data": map[string]any{"ts": time.Now().UnixMilli()}}
	}
	return map[string]any{"edu_type": "m.receipt", "content": map[string]any{roomID: map[string]any{"m.read": reads}}}
}

// readReceiptsOf lists the m.read receipts of userID that hs stored for the room, as "user event".
func readReceiptsOf(t *testing.T, hs *servertest.Server, roomID string, userIDs ...string) []string {
	t.Helper()
	rs, err := hs.Store.Read().ReceiptsSince(context.Background(), []string{roomID}, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Type == "m.read" && slices.Contains(userIDs, r.UserID) {
			out = append(out, r.UserID+" "+r.EventID)
		}
	}
	return out
}

func TestFederatedEphemeral(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		ctx := context.Background()
		room := url.PathEscape(sr.roomID)
		alice, bob := sr.alice.UserID, sr.bob.UserID
		mallory := "@mallory:" + sr.name2 // of hs2, not in the room
		bobF := newEphFollower(sr.hs2, sr.bob)
		bobF.once(t)

		// Forged or wrong EDUs from hs2 are not applied; bob's own are (the control).
		aliceMsg := sendText(t, sr.hs1, sr.alice, sr.roomID, "read me")
		sr.bobS.waitFor(t, sr.roomID, "alice's message", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, alice), "read me")
		})
		if res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice)+"/status", sr.alice.AccessToken,
			map[string]any{"presence": "online", "status_msg": "real"}); res.Status != 200 {
			t.Fatalf("PUT presence: %d %s", res.Status, res.Raw)
		}
		sendEDUs(t, sr.hs2, sr.hs1, "",
			typingEDUFor(sr.roomID, alice, true),   // a user of another server
			typingEDUFor(sr.roomID, mallory, true), // not in the room
			typingEDUFor(sr.roomID, bob, true),
			receiptEDUFor(sr.roomID, map[string]string{alice: aliceMsg, mallory: aliceMsg, bob: aliceMsg}),
			map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{
				map[string]any{"user_id": alice, "presence": "unavailable", "status_msg": "forged", "last_active_ago": 1}}}},
		)
		if got := sr.hs1.Typing.Typing(sr.roomID); !slices.Equal(got, []string{bob}) {
			t.Errorf("typing on hs1 after hs2's EDUs: %v, want only bob", got)
		}
		if got := readReceiptsOf(t, sr.hs1, sr.roomID, alice, mallory, bob); !slices.Equal(got, []string{bob + " " + aliceMsg}) {
			t.Errorf("receipts stored on hs1 after hs2's EDU: %v, want only bob's", got)
		}
		if st, err := sr.hs1.Presence.Get(ctx, alice, alice); err != nil || st.Presence != "online" || st.StatusMsg == nil || *st.StatusMsg != "real" {
			t.Errorf("alice's presence on hs1 after a forged EDU: %+v %v", st, err)
		}
		sendEDUs(t, sr.hs2, sr.hs1, "", typingEDUFor(sr.roomID, bob, false))
		if got := sr.hs1.Typing.Typing(sr.roomID); len(got) != 0 {
			t.Errorf("typing on hs1 after bob stopped: %v", got)
		}

		// Typing: alice starts and stops; bob sees both.
		if res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/typing/"+url.PathEscape(alice), sr.alice.AccessToken,
			map[string]any{"typing": true, "timeout": 30000}); res.Status != 200 {
			t.Fatalf("PUT typing: %d %s", res.Status, res.Raw)
		}
		bobF.waitFor(t, "alice typing", func() bool { return slices.Equal(bobF.typing[sr.roomID], []string{alice}) })
		if res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/typing/"+url.PathEscape(alice), sr.alice.AccessToken,
			map[string]any{"typing": false}); res.Status != 200 {
			t.Fatalf("PUT typing: %d %s", res.Status, res.Raw)
		}
		bobF.waitFor(t, "alice no longer typing", func() bool {
			l, ok := bobF.typing[sr.roomID]
			return ok && len(l) == 0
		})

		// Receipts: alice reads bob's message; bob sees her receipt. Her private receipt stays home.
		bobMsg := sendText(t, sr.hs2, sr.bob, sr.roomID, "did you read this?")
		sr.aliceS.waitFor(t, sr.roomID, "bob's message", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, bob), "did you read this?")
		})
		if res := sr.hs1.Do(t, "POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read.private/"+url.PathEscape(bobMsg),
			sr.alice.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("POST receipt: %d %s", res.Status, res.Raw)
		}
		if res := sr.hs1.Do(t, "POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read/"+url.PathEscape(bobMsg),
			sr.alice.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("POST receipt: %d %s", res.Status, res.Raw)
		}
		bobF.waitFor(t, "alice's read receipt", func() bool { return bobF.receipts[sr.roomID+" "+bobMsg+" m.read "+alice] })
		rs, err := sr.hs2.Store.Read().ReceiptsSince(ctx, []string{sr.roomID}, 0, alice)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(rs, func(r storage.Receipt) bool { return r.UserID == alice && r.Type != "m.read" }) {
			t.Errorf("hs2 stored another receipt type of alice than m.read: %+v", rs)
		}

		// Presence: online with a message, then unavailable; bob sees both in /sync and GET /presence.
		for _, p := range []struct{ presence, msg string }{{"online", "around"}, {"unavailable", "at lunch"}} {
			if res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice)+"/status", sr.alice.AccessToken,
				map[string]any{"presence": p.presence, "status_msg": p.msg}); res.Status != 200 {
				t.Fatalf("PUT presence: %d %s", res.Status, res.Raw)
			}
			bobF.waitFor(t, "alice "+p.presence, func() bool {
				st := bobF.presence[alice]
				return st.Presence == p.presence && st.StatusMsg == p.msg
			})
			if st := bobF.presence[alice]; st.CurrentlyActive != (p.presence == "online") || st.LastActiveAgo == nil {
				t.Errorf("alice's presence in bob's sync: %+v", st)
			}
			res := sr.hs2.Do(t, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(alice)+"/status", sr.bob.AccessToken, nil)
			if res.Status != 200 || res.Str("presence") != p.presence || res.Str("status_msg") != p.msg {
				t.Errorf("GET /presence/alice on hs2: %d %s", res.Status, res.Raw)
			}
		}

		// A room whose ACL denies hs2: hs2's typing and receipts for it are not applied.
		if res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.server_acl/", sr.alice.AccessToken,
			map[string]any{"allow": []string{"*"}, "deny": []string{sr.hs2IP}}); res.Status != 200 {
			t.Fatalf("PUT m.room.server_acl: %d %s", res.Status, res.Raw)
		}
		last := sendText(t, sr.hs1, sr.alice, sr.roomID, "after the ACL")
		sendEDUs(t, sr.hs2, sr.hs1, "", typingEDUFor(sr.roomID, bob, true), receiptEDUFor(sr.roomID, map[string]string{bob: last}))
		if got := sr.hs1.Typing.Typing(sr.roomID); len(got) != 0 {
			t.Errorf("typing of a denied server applied: %v", got)
		}
		if got := readReceiptsOf(t, sr.hs1, sr.roomID, bob); slices.ContainsFunc(got, func(s string) bool { return strings.HasSuffix(s, last) }) {
			t.Errorf("receipt of a denied server stored: %v", got)
		}
	})
}

// With presence.local_only on hs1, alice's presence does not leave hs1 and bob's is not taken.
func TestFederatedPresenceLocalOnly(t *testing.T) {
	ca := servertest.NewCA(t)
	hs1 := servertest.Start(t, "sqlite", servertest.Federated(t, ca, ip1), fastRetry,
		func(c *config.Config) { c.Presence.LocalOnly = true })
	hs2 := servertest.Start(t, "sqlite", servertest.Federated(t, ca, ip2), fastRetry)
	alice := hs1.Register(t, "alice", "alice-password-1")
	bob := hs2.Register(t, "bob", "bob-password-12")
	roomID := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat"})
	joinVia(t, hs2, bob, roomID, hs1.Config.ServerName)
	servertest.Eventually(t, 20*time.Second, func() error {
		if m, err := hs1.Rooms.CurrentMembership(context.Background(), roomID, bob.UserID); err != nil || m != "join" {
			return fmt.Errorf("bob's membership on hs1: %q %v", m, err)
		}
		return nil
	})

	// Bob's presence from hs2 is ignored by hs1.
	sendEDUs(t, hs2, hs1, "", map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{
		map[string]any{"user_id": bob.UserID, "presence": "online", "status_msg": "hello", "last_active_ago": 1}}}})
	if st, err := hs1.Presence.Get(context.Background(), alice.UserID, bob.UserID); err != nil || st.Presence != "offline" {
		t.Errorf("bob's presence on hs1: %+v %v", st, err)
	}

	// Alice's presence change, then her typing: typing reaches bob, the presence does not (both
	// would travel through the same queue, presence first).
	bobF := newEphFollower(hs2, bob)
	bobF.once(t)
	if res := hs1.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status", alice.AccessToken,
		map[string]any{"presence": "online", "status_msg": "only here"}); res.Status != 200 {
		t.Fatalf("PUT presence: %d %s", res.Status, res.Raw)
	}
	if res := hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/typing/"+url.PathEscape(alice.UserID),
		alice.AccessToken, map[string]any{"typing": true, "timeout": 30000}); res.Status != 200 {
		t.Fatalf("PUT typing: %d %s", res.Status, res.Raw)
	}
	bobF.waitFor(t, "alice typing", func() bool { return slices.Equal(bobF.typing[roomID], []string{alice.UserID}) })
	if st, ok := bobF.presence[alice.UserID]; ok {
		t.Errorf("alice's presence reached hs2: %+v", st)
	}
	if st, err := hs2.Presence.Get(context.Background(), bob.UserID, alice.UserID); err != nil || st.Presence != "offline" {
		t.Errorf("alice's presence on hs2: %+v %v", st, err)
	}
}
