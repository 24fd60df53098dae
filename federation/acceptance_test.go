package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// Issue 7's acceptance scenario: three of our servers, each on its own loopback address with its
// own certificate from the test's CA, share one room. Each step is a subtest, run in order on the
// same servers; a step the later ones depend on stops the test when it fails, the others
// (backfill, typing, receipts, presence, the server ACL: features of their own) only fail.

// The three servers of TestThreeServers (as issue 7 names them).
const (
	accIP1 = "127.0.0.1"
	accIP2 = "127.0.0.2"
	accIP3 = "127.0.0.3"
)

// threeServers is the state the steps share.
type threeServers struct {
	// top is the test that runs the steps: what a step starts (servers) must outlive the step.
	top                 *testing.T
	backend             string
	ca                  *servertest.CA
	hs1, hs2, hs3       *servertest.Server
	alice, bob, carol   servertest.User
	aliceS, bobS, carlS *syncer
	roomID, alias       string
	// sent lists the bodies of every m.room.message sent in the room, in causal order (each was
	// sent after its sender's server had the previous one); seenFrom says where each syncer's
	// view starts in it (the messages before its user joined are not in its /sync).
	sent     []string
	seenFrom map[*syncer]int
}

func TestThreeServers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		w := &threeServers{top: t, backend: backend, seenFrom: map[*syncer]int{}}
		// step runs a step the next ones depend on; optional one they do not.
		step := func(name string, fn func(t *testing.T)) {
			if !t.Run(name, fn) {
				t.FailNow()
			}
		}
		optional := func(name string, fn func(t *testing.T)) { t.Run(name, fn) }

		step("01_start_and_create_room", w.stepStartAndCreateRoom)
		step("02_hs2_joins_by_alias", w.stepHS2JoinsByAlias)
		step("03_hs1_hs2_chat", w.stepHS1HS2Chat)
		step("04_hs3_joins_by_alias", w.stepHS3JoinsByAlias)
		step("05_everyone_chats", w.stepEveryoneChats)
		optional("06_late_joiner_backfills", w.stepLateJoinerBackfills)
		optional("07_typing", w.stepTypingCrossesServers)
		optional("08_receipts", w.stepReceiptsCrossServers)
		optional("09_presence", w.stepPresenceCrossesServers)
		step("10_hs2_down_then_back", w.stepHS2DownThenBack)
		step("11_hs3_replies", w.stepHS3Replies)
		optional("12_acl_refuses_hs3", w.stepACLRefusesHS3)
	})
}

// stepStartAndCreateRoom: hs1..hs3 start (same backend), alice@hs1 creates a public room with
// the alias #lobby:hs1.
func (w *threeServers) stepStartAndCreateRoom(t *testing.T) {
	w.ca = servertest.NewCA(w.top)
	pt := w.top // the servers belong to the whole test, not to this step
	w.hs1 = servertest.Start(pt, w.backend, servertest.Federated(pt, w.ca, accIP1), fastRetry)
	w.hs2 = servertest.Start(pt, w.backend, servertest.Federated(pt, w.ca, accIP2), fastRetry)
	w.hs3 = servertest.Start(pt, w.backend, servertest.Federated(pt, w.ca, accIP3), fastRetry)
	w.alice = w.hs1.Register(t, "alice", "alice-password-1")
	w.bob = w.hs2.Register(t, "bob", "bob-password-12")
	w.carol = w.hs3.Register(t, "carol", "carol-password-1")
	w.roomID = createRoom(t, w.hs1, w.alice, map[string]any{"preset": "public_chat", "room_alias_name": "lobby", "name": "Three servers"})
	w.alias = "#lobby:" + w.hs1.Config.ServerName
	w.aliceS, w.bobS, w.carlS = newSyncer(w.hs1, w.alice), newSyncer(w.hs2, w.bob), newSyncer(w.hs3, w.carol)
	w.aliceS.waitFor(t, w.roomID, "the room's creation", func(evs []timelineEvent) bool { return hasMember(evs, w.alice.UserID, "join") })
}

// stepHS2JoinsByAlias: bob@hs2 joins #lobby:hs1 (hs2 resolves it with hs1's /query/directory,
// then make_join/send_join); alice and bob both see the join.
func (w *threeServers) stepHS2JoinsByAlias(t *testing.T) {
	w.joinByAlias(t, w.hs2, w.bob, w.bobS)
	w.aliceS.waitFor(t, w.roomID, "bob's join", func(evs []timelineEvent) bool { return hasMember(evs, w.bob.UserID, "join") })
}

// stepHS1HS2Chat: alice and bob talk before hs3 is in the room (history hs3 will not have).
func (w *threeServers) stepHS1HS2Chat(t *testing.T) {
	w.say(t, w.aliceS, "alice: before hs3")
	w.say(t, w.bobS, "bob: before hs3")
	w.allSee(t, w.aliceS, w.bobS)
}

// stepHS3JoinsByAlias: carol@hs3 joins by the same alias; all three see her join, and hs3 has
// the room's state (its name, all three members).
func (w *threeServers) stepHS3JoinsByAlias(t *testing.T) {
	w.joinByAlias(t, w.hs3, w.carol, w.carlS)
	for _, s := range []*syncer{w.aliceS, w.bobS} {
		s.waitFor(t, w.roomID, "carol's join", func(evs []timelineEvent) bool { return hasMember(evs, w.carol.UserID, "join") })
	}
	name := w.hs3.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(w.roomID)+"/state/m.room.name/", w.carol.AccessToken, nil)
	if name.Status != 200 || name.Str("name") != "Three servers" {
		t.Errorf("room name on hs3: %d %s", name.Status, name.Raw)
	}
	members := w.hs3.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(w.roomID)+"/joined_members", w.carol.AccessToken, nil)
	for _, u := range []string{w.alice.UserID, w.bob.UserID, w.carol.UserID} {
		if !strings.Contains(string(members.Raw), u) {
			t.Errorf("hs3's joined members lack %s: %s", u, members.Raw)
		}
	}
}

// stepEveryoneChats: each user talks in turn, twice; everyone's /sync shows every message once,
// in the same order.
func (w *threeServers) stepEveryoneChats(t *testing.T) {
	for round := range 2 {
		w.say(t, w.aliceS, fmt.Sprintf("alice: round %d", round))
		w.say(t, w.bobS, fmt.Sprintf("bob: round %d", round))
		w.say(t, w.carlS, fmt.Sprintf("carol: round %d", round))
	}
	w.allSee(t, w.aliceS, w.bobS, w.carlS)
}

// stepLateJoinerBackfills: dave@hs3 joins after all that and pages /messages backwards to the
// room's creation: hs3 backfills what happened before it joined (create event, alice's and
// bob's first messages) from the other servers, and dave sees every message in order.
func (w *threeServers) stepLateJoinerBackfills(t *testing.T) {
	dave := w.hs3.Register(t, "dave", "dave-password-12")
	join := w.hs3.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(w.alias), dave.AccessToken, map[string]any{})
	if join.Status != 200 || join.Str("room_id") != w.roomID {
		t.Fatalf("dave joins: %d %s", join.Status, join.Raw)
	}
	var history []timelineEvent // newest first
	from := ""
	for page := 0; ; page++ {
		if page > 50 {
			t.Fatalf("/messages did not reach the start of the room after %d pages", page)
		}
		q := "?dir=b&limit=10"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		res := w.hs3.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(w.roomID)+"/messages"+q, dave.AccessToken, nil)
		if res.Status != 200 {
			t.Fatalf("/messages: %d %s", res.Status, res.Raw)
		}
		var body struct {
			Chunk []timelineEvent `json:"chunk"`
			End   string          `json:"end"`
		}
		if err := json.Unmarshal(res.Raw, &body); err != nil {
			t.Fatal(err)
		}
		history = append(history, body.Chunk...)
		if body.End == "" || len(body.Chunk) == 0 {
			break
		}
		from = body.End
	}
	slices.Reverse(history)
	if len(history) == 0 || history[0].Type != "m.room.create" {
		t.Fatalf("dave's history does not start with m.room.create:%s", describe(history))
	}
	if got := allMessages(history); !slices.Equal(got, w.sent) {
		t.Fatalf("dave's history has messages %q, want %q", got, w.sent)
	}
	noDuplicates(t, "dave", history)
}

// stepTypingCrossesServers: alice@hs1 types; bob@hs2 and carol@hs3 see her in the room's m.typing
// (federation EDU m.typing), then see her stop.
func (w *threeServers) stepTypingCrossesServers(t *testing.T) {
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(w.roomID) + "/typing/" + url.PathEscape(w.alice.UserID)
	typingIn := func(b syncBody) ([]string, bool) {
		for _, e := range b.Rooms.Join[w.roomID].Ephemeral.Events {
			if e.Type == "m.typing" {
				var c struct {
					UserIDs []string `json:"user_ids"`
				}
				_ = json.Unmarshal(e.Content, &c)
				return c.UserIDs, true
			}
		}
		return nil, false
	}
	watchers := []*syncWatch{newSyncWatch(t, w.hs2, w.bob), newSyncWatch(t, w.hs3, w.carol)}
	if r := w.hs1.Do(t, "PUT", path, w.alice.AccessToken, map[string]any{"typing": true, "timeout": 30000}); r.Status != 200 {
		t.Fatalf("typing: %d %s", r.Status, r.Raw)
	}
	for _, sw := range watchers {
		sw.waitFor(t, "alice typing", func(b syncBody) bool {
			ids, ok := typingIn(b)
			return ok && slices.Contains(ids, w.alice.UserID)
		})
	}
	if r := w.hs1.Do(t, "PUT", path, w.alice.AccessToken, map[string]any{"typing": false}); r.Status != 200 {
		t.Fatalf("stop typing: %d %s", r.Status, r.Raw)
	}
	for _, sw := range watchers {
		sw.waitFor(t, "alice no longer typing", func(b syncBody) bool {
			ids, ok := typingIn(b)
			return ok && !slices.Contains(ids, w.alice.UserID)
		})
	}
}

// stepReceiptsCrossServers: bob@hs2 sends a read receipt for the last message; alice@hs1 and
// carol@hs3 see it in the room's m.receipt (federation EDU m.receipt).
func (w *threeServers) stepReceiptsCrossServers(t *testing.T) {
	evs := w.bobS.rooms[w.roomID]
	last := evs[len(evs)-1].EventID
	watchers := []*syncWatch{newSyncWatch(t, w.hs1, w.alice), newSyncWatch(t, w.hs3, w.carol)}
	r := w.hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(w.roomID)+"/receipt/m.read/"+url.PathEscape(last),
		w.bob.AccessToken, map[string]any{})
	if r.Status != 200 {
		t.Fatalf("receipt: %d %s", r.Status, r.Raw)
	}
	for _, sw := range watchers {
		sw.waitFor(t, "bob's read receipt", func(b syncBody) bool {
			for _, e := range b.Rooms.Join[w.roomID].Ephemeral.Events {
				if e.Type != "m.receipt" {
					continue
				}
				var c map[string]map[string]map[string]struct {
					TS int64 `json:"ts"`
				}
				_ = json.Unmarshal(e.Content, &c)
				if rec, ok := c[last]["m.read"][w.bob.UserID]; ok && rec.TS > 0 {
					return true
				}
			}
			return false
		})
	}
}

// stepPresenceCrossesServers: carol@hs3 sets her presence with a status message; alice@hs1 and
// bob@hs2, who share the room with her, see it in /sync's presence (federation EDU m.presence).
func (w *threeServers) stepPresenceCrossesServers(t *testing.T) {
	watchers := []*syncWatch{newSyncWatch(t, w.hs1, w.alice), newSyncWatch(t, w.hs2, w.bob)}
	r := w.hs3.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(w.carol.UserID)+"/status", w.carol.AccessToken,
		map[string]any{"presence": "online", "status_msg": "on hs3"})
	if r.Status != 200 {
		t.Fatalf("presence: %d %s", r.Status, r.Raw)
	}
	for _, sw := range watchers {
		sw.waitFor(t, "carol's presence", func(b syncBody) bool {
			for _, e := range b.Presence.Events {
				var c struct {
					Presence  string `json:"presence"`
					StatusMsg string `json:"status_msg"`
				}
				_ = json.Unmarshal(e.Content, &c)
				if e.Type == "m.presence" && e.Sender == w.carol.UserID && c.Presence == "online" && c.StatusMsg == "on hs3" {
					return true
				}
			}
			return false
		})
	}
}

// stepHS2DownThenBack: hs2 stops; alice and carol keep talking (hs1 and hs3 queue the events for
// hs2); hs2 restarts on the same data and bob sees every message he missed, once, in order.
func (w *threeServers) stepHS2DownThenBack(t *testing.T) {
	ctx := context.Background()
	name2 := w.hs2.Config.ServerName
	w.hs2.Stop()
	w.say(t, w.aliceS, "alice: while hs2 is down")
	w.say(t, w.carlS, "carol: while hs2 is down")
	w.say(t, w.aliceS, "alice: still down")
	w.allSee(t, w.aliceS, w.carlS)
	for _, hs := range []*servertest.Server{w.hs1, w.hs3} {
		n, err := hs.Federation.Sender().Pending(ctx, name2)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("%s queued nothing for hs2 while it was down", hs.Config.ServerName)
		}
	}
	w.hs2 = w.hs2.Restart(w.top)
	w.bobS.hs = w.hs2
	w.allSee(t, w.bobS)
	waitQueueEmpty(t, w.hs1, name2)
	waitQueueEmpty(t, w.hs3, name2)
}

// stepHS3Replies: carol answers after hs2 is back; everyone sees it, and the whole conversation,
// in the same order.
func (w *threeServers) stepHS3Replies(t *testing.T) {
	w.say(t, w.carlS, "carol: welcome back, bob")
	w.say(t, w.bobS, "bob: thanks")
	w.allSee(t, w.aliceS, w.bobS, w.carlS)
}

// stepACLRefusesHS3: alice sets an m.room.server_acl denying hs3's host (127.0.0.3; ACLs ignore
// ports). hs1 and hs2 then refuse hs3: its state_ids request gets 403 M_FORBIDDEN, and a message
// carol sends is ignored by both (not stored, not in alice's or bob's /sync), while alice and bob
// still talk to each other.
func (w *threeServers) stepACLRefusesHS3(t *testing.T) {
	ctx := context.Background()
	acl := w.hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(w.roomID)+"/state/m.room.server_acl/", w.alice.AccessToken,
		map[string]any{"allow": []string{"*"}, "deny": []string{accIP3}, "allow_ip_literals": true})
	if acl.Status != 200 {
		t.Fatalf("server ACL: %d %s", acl.Status, acl.Raw)
	}
	aclID := acl.Str("event_id")
	for _, s := range []*syncer{w.bobS, w.carlS} {
		s.waitFor(t, w.roomID, "the server ACL", func(evs []timelineEvent) bool {
			return slices.ContainsFunc(evs, func(e timelineEvent) bool { return e.EventID == aclID })
		})
	}

	// A protected endpoint refuses hs3.
	var out json.RawMessage
	err := w.hs3.Federation.Client().DoJSON(ctx, w.hs1.Config.ServerName, "GET",
		"/_matrix/federation/v1/state_ids/"+url.PathEscape(w.roomID)+"?event_id="+url.QueryEscape(aclID), nil, &out)
	if !isFedError(err, http.StatusForbidden, "M_FORBIDDEN") {
		t.Errorf("hs3's /state_ids after the ACL: %v, want 403 M_FORBIDDEN", err)
	}

	// carol's message is ignored by hs1 and hs2. hs3 may keep it; it leaves hs3's queues once
	// each server answered.
	banned := sendText(t, w.hs3, w.carol, w.roomID, "carol: from a denied server")
	waitQueueEmpty(t, w.hs3, w.hs1.Config.ServerName)
	waitQueueEmpty(t, w.hs3, w.hs2.Config.ServerName)
	w.say(t, w.aliceS, "alice: after the ACL")
	w.bobS.waitFor(t, w.roomID, "alice after the ACL", func(evs []timelineEvent) bool {
		return slices.Contains(allMessages(evs), "alice: after the ACL")
	})
	for _, hs := range []*servertest.Server{w.hs1, w.hs2} {
		if _, ok := storedEvent(t, hs, banned); ok {
			t.Errorf("%s stored the event of a denied server", hs.Config.ServerName)
		}
	}
	for _, s := range []*syncer{w.aliceS, w.bobS} {
		s.once(t, 0)
		if slices.Contains(allMessages(s.rooms[w.roomID]), "carol: from a denied server") {
			t.Errorf("%s sees the message of a denied server", s.user.UserID)
		}
	}
}

// joinByAlias joins u (of hs) to the room by its alias on hs1 and waits for u's own join in
// /sync; s's view of the messages starts there.
func (w *threeServers) joinByAlias(t *testing.T, hs *servertest.Server, u servertest.User, s *syncer) {
	t.Helper()
	join := hs.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(w.alias), u.AccessToken, map[string]any{})
	if join.Status != 200 || join.Str("room_id") != w.roomID {
		t.Fatalf("%s joins %s: %d %s", u.UserID, w.alias, join.Status, join.Raw)
	}
	s.waitFor(t, w.roomID, "the own join", func(evs []timelineEvent) bool { return hasMember(evs, u.UserID, "join") })
	w.seenFrom[s] = len(w.sent)
}

// say sends body as s's user once s sees every message sent so far, so that the new message
// follows them all in the room's graph (the order is the same on every server).
func (w *threeServers) say(t *testing.T, s *syncer, body string) {
	t.Helper()
	w.waitAll(t, s)
	sendText(t, s.hs, s.user, w.roomID, body)
	w.sent = append(w.sent, body)
}

// waitAll waits until s has seen every message it should have.
func (w *threeServers) waitAll(t *testing.T, s *syncer) {
	t.Helper()
	want := w.sent[w.seenFrom[s]:]
	s.waitFor(t, w.roomID, fmt.Sprintf("%d messages", len(want)), func(evs []timelineEvent) bool {
		return len(allMessages(evs)) >= len(want)
	})
}

// allSee checks that each syncer saw exactly the messages sent since its user joined, in order,
// once each (after one more short sync, so that a late duplicate would show).
func (w *threeServers) allSee(t *testing.T, syncers ...*syncer) {
	t.Helper()
	for _, s := range syncers {
		w.waitAll(t, s)
	}
	for _, s := range syncers {
		s.once(t, 100)
		evs := s.rooms[w.roomID]
		if got, want := allMessages(evs), w.sent[w.seenFrom[s]:]; !slices.Equal(got, want) {
			t.Fatalf("%s sees %q, want %q", s.user.UserID, got, want)
		}
		noDuplicates(t, s.user.UserID, evs)
	}
}

// allMessages lists the bodies of the m.room.message events of a timeline, in order.
func allMessages(evs []timelineEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}

// syncWatch follows a user's /sync from now on, on its own position (the timeline syncers are
// left alone), for what is not in timelines: typing, receipts, presence.
type syncWatch struct {
	hs   *servertest.Server
	user servertest.User
	next string
}

// newSyncWatch starts watching at u's current position.
func newSyncWatch(t *testing.T, hs *servertest.Server, u servertest.User) *syncWatch {
	t.Helper()
	sw := &syncWatch{hs: hs, user: u}
	sw.once(t, 0)
	return sw
}

const watchFilter = `{"room":{"timeline":{"limit":1}}}`

func (sw *syncWatch) once(t *testing.T, timeoutMS int) syncBody {
	t.Helper()
	var b syncBody
	syncOnce(t, sw.hs, sw.user, sw.next, watchFilter, timeoutMS, &b)
	sw.next = b.NextBatch
	return b
}

// waitFor long-polls until a response satisfies cond (20 s at most).
func (sw *syncWatch) waitFor(t *testing.T, what string, cond func(syncBody) bool) {
	t.Helper()
	var b syncBody
	syncUntil(t, sw.user.UserID+": "+what, func() bool { return b.NextBatch != "" && cond(b) },
		func() { b = sw.once(t, 500) }, func() string { return "last sync at " + sw.next })
}
