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
)

// Two of our servers sharing a room: joins, messages both ways through /send, the durable queue.

// fastRetry makes the outbound queue retry quickly.
func fastRetry(cfg *config.Config) {
	cfg.Federation.RetryInitial = config.Duration(50 * time.Millisecond)
	cfg.Federation.RetryMax = config.Duration(500 * time.Millisecond)
}

// timelineEvent is a timeline event as a client sees it in /sync.
type timelineEvent struct {
	EventID  string          `json:"event_id"`
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

func (e timelineEvent) body() string {
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(e.Content, &c)
	return c.Body
}

// syncer follows one user's /sync and keeps every timeline event of every joined room, in order.
type syncer struct {
	hs    *servertest.Server
	user  servertest.User
	next  string
	rooms map[string][]timelineEvent
	// invites holds the invite_state of the rooms the user was last seen invited to; left the
	// rooms last seen in rooms.leave.
	invites map[string][]timelineEvent
	left    map[string]bool
}

func newSyncer(hs *servertest.Server, u servertest.User) *syncer {
	return &syncer{hs: hs, user: u, rooms: map[string][]timelineEvent{}, invites: map[string][]timelineEvent{}, left: map[string]bool{}}
}

const syncFilter = `{"room":{"timeline":{"limit":100}}}`

// once runs one /sync (long-polling up to timeoutMS) and records what it got.
func (s *syncer) once(t testing.TB, timeoutMS int) {
	t.Helper()
	var body struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events  []timelineEvent `json:"events"`
					Limited bool            `json:"limited"`
				} `json:"timeline"`
			} `json:"join"`
			Invite map[string]struct {
				InviteState struct {
					Events []timelineEvent `json:"events"`
				} `json:"invite_state"`
			} `json:"invite"`
			Leave map[string]json.RawMessage `json:"leave"`
		} `json:"rooms"`
	}
	syncOnce(t, s.hs, s.user, s.next, syncFilter, timeoutMS, &body)
	for id, r := range body.Rooms.Join {
		if r.Timeline.Limited && s.next != "" {
			t.Errorf("%s: sync timeline of %s limited: events would be skipped", s.user.UserID, id)
		}
		s.rooms[id] = append(s.rooms[id], r.Timeline.Events...)
		delete(s.invites, id)
	}
	for id, r := range body.Rooms.Invite {
		s.invites[id] = r.InviteState.Events
	}
	for id := range body.Rooms.Leave {
		s.left[id] = true
		delete(s.invites, id)
	}
	s.next = body.NextBatch
}

// waitFor syncs until cond holds for the events of roomID (20 s at most).
func (s *syncer) waitFor(t testing.TB, roomID, what string, cond func(evs []timelineEvent) bool) {
	t.Helper()
	syncUntil(t, s.user.UserID+": "+what, func() bool { return cond(s.rooms[roomID]) }, func() { s.once(t, 500) },
		func() string { return "timeline: " + describe(s.rooms[roomID]) })
}

// waitUntil syncs until cond holds (20 s at most), for what is not in one room's timeline
// (invites, rooms left).
func (s *syncer) waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	syncUntil(t, s.user.UserID+": "+what, cond, func() { s.once(t, 500) },
		func() string { return fmt.Sprintf("invites %v, left %v", s.invites, s.left) })
}

func describe(evs []timelineEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  %s %s %s %q", e.EventID, e.Type, e.Sender, e.body())
	}
	return b.String()
}

// messagesFrom lists the bodies of the m.room.message events of sender.
func messagesFrom(evs []timelineEvent, sender string) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" && e.Sender == sender {
			out = append(out, e.body())
		}
	}
	return out
}

func hasMember(evs []timelineEvent, user, membership string) bool {
	for _, e := range evs {
		if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == user {
			var c struct {
				Membership string `json:"membership"`
			}
			_ = json.Unmarshal(e.Content, &c)
			if c.Membership == membership {
				return true
			}
		}
	}
	return false
}

func sendText(t testing.TB, hs *servertest.Server, u servertest.User, roomID, body string) string {
	t.Helper()
	txn := fmt.Sprintf("t%d", time.Now().UnixNano())
	res := hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn, u.AccessToken,
		map[string]any{"msgtype": "m.text", "body": body})
	if res.Status != 200 {
		t.Fatalf("send %q: %d %s", body, res.Status, res.Raw)
	}
	return res.Str("event_id")
}

// noDuplicates fails if an event appears twice in a timeline.
func noDuplicates(t *testing.T, who string, evs []timelineEvent) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.EventID] {
			t.Errorf("%s got %s twice", who, e.EventID)
		}
		seen[e.EventID] = true
	}
}

// sharedRoom starts hs1 and hs2, has alice@hs1 create a public room and bob@hs2 join it by room
// ID through hs1, and waits until each side sees the join.
type sharedRoom struct {
	fedPair
	roomID         string
	aliceS, bobS   *syncer
	name1, name2   string
	hs2IP, backend string
}

func newSharedRoom(t testing.TB, backend string, roomVersion string) *sharedRoom {
	t.Helper()
	sr := &sharedRoom{fedPair: newFedPair(t, backend, fastRetry), backend: backend, hs2IP: ip2}
	sr.name1, sr.name2 = sr.hs1.Config.ServerName, sr.hs2.Config.ServerName
	body := map[string]any{"preset": "public_chat", "name": "Across servers"}
	if roomVersion != "" {
		body["room_version"] = roomVersion
	}
	sr.roomID = createRoom(t, sr.hs1, sr.alice, body)
	sr.aliceS, sr.bobS = newSyncer(sr.hs1, sr.alice), newSyncer(sr.hs2, sr.bob)
	sr.aliceS.once(t, 0)
	sr.bobS.once(t, 0)

	join := sr.hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(sr.roomID)+"?via="+url.QueryEscape(sr.name1), sr.bob.AccessToken, map[string]any{})
	if join.Status != 200 || join.Str("room_id") != sr.roomID {
		t.Fatalf("bob joins over federation: %d %s", join.Status, join.Raw)
	}
	sr.aliceS.waitFor(t, sr.roomID, "bob's join", func(evs []timelineEvent) bool { return hasMember(evs, sr.bob.UserID, "join") })
	sr.bobS.waitFor(t, sr.roomID, "his own join", func(evs []timelineEvent) bool { return hasMember(evs, sr.bob.UserID, "join") })
	return sr
}

func TestFederatedRoomMessages(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		for _, version := range []string{"", "12"} {
			name := "default"
			if version != "" {
				name = "v" + version
			}
			t.Run(name, func(t *testing.T) { testFederatedRoomMessages(t, backend, version) })
		}
	})
}

func testFederatedRoomMessages(t *testing.T, backend, version string) {
	sr := newSharedRoom(t, backend, version)
	ctx := context.Background()

	// bob's server has the room's state: name, members.
	state := sr.hs2.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(sr.roomID)+"/state/m.room.name/", sr.bob.AccessToken, nil)
	if state.Status != 200 || state.Str("name") != "Across servers" {
		t.Fatalf("room name on hs2: %d %s", state.Status, state.Raw)
	}
	members := sr.hs2.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(sr.roomID)+"/joined_members", sr.bob.AccessToken, nil)
	if !strings.Contains(string(members.Raw), sr.alice.UserID) || !strings.Contains(string(members.Raw), sr.bob.UserID) {
		t.Fatalf("joined members on hs2: %s", members.Raw)
	}

	// Both talk, interleaved.
	var fromAlice, fromBob []string
	for i := range 4 {
		a := fmt.Sprintf("alice %d", i)
		sendText(t, sr.hs1, sr.alice, sr.roomID, a)
		fromAlice = append(fromAlice, a)
		b := fmt.Sprintf("bob %d", i)
		sendText(t, sr.hs2, sr.bob, sr.roomID, b)
		fromBob = append(fromBob, b)
	}
	sr.bobS.waitFor(t, sr.roomID, "alice's messages", func(evs []timelineEvent) bool {
		return len(messagesFrom(evs, sr.alice.UserID)) >= len(fromAlice)
	})
	sr.aliceS.waitFor(t, sr.roomID, "bob's messages", func(evs []timelineEvent) bool {
		return len(messagesFrom(evs, sr.bob.UserID)) >= len(fromBob)
	})
	// A little longer, so that a duplicate would show.
	sr.aliceS.once(t, 300)
	sr.bobS.once(t, 300)
	if got := messagesFrom(sr.bobS.rooms[sr.roomID], sr.alice.UserID); !slices.Equal(got, fromAlice) {
		t.Errorf("bob sees alice's messages %q, want %q", got, fromAlice)
	}
	if got := messagesFrom(sr.aliceS.rooms[sr.roomID], sr.bob.UserID); !slices.Equal(got, fromBob) {
		t.Errorf("alice sees bob's messages %q, want %q", got, fromBob)
	}
	noDuplicates(t, "alice", sr.aliceS.rooms[sr.roomID])
	noDuplicates(t, "bob", sr.bobS.rooms[sr.roomID])
	// Each side's own messages too, once each.
	if got := messagesFrom(sr.aliceS.rooms[sr.roomID], sr.alice.UserID); !slices.Equal(got, fromAlice) {
		t.Errorf("alice sees her messages %q", got)
	}

	// Nothing stays queued.
	waitQueueEmpty(t, sr.hs1, sr.name2)
	waitQueueEmpty(t, sr.hs2, sr.name1)

	// bob leaves: alice sees it, and hs2, without joined members, gets no more events.
	if res := sr.hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(sr.roomID)+"/leave", sr.bob.AccessToken, map[string]any{}); res.Status != 200 {
		t.Fatalf("bob leaves: %d %s", res.Status, res.Raw)
	}
	sr.aliceS.waitFor(t, sr.roomID, "bob's leave", func(evs []timelineEvent) bool { return hasMember(evs, sr.bob.UserID, "leave") })
	sendText(t, sr.hs1, sr.alice, sr.roomID, "after bob left")
	if n, err := sr.hs1.Federation.Sender().Pending(ctx, sr.name2); err != nil || n != 0 {
		t.Fatalf("events queued for hs2 after its last member left: %d, %v", n, err)
	}
}

func waitQueueEmpty(t *testing.T, hs *servertest.Server, dest string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := hs.Federation.Sender().Pending(context.Background(), dest)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still queued for %s", n, dest)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFederationQueueSurvivesDowntime: hs2 is stopped while alice sends 5 messages; they wait in
// hs1's queue (table federation_outbox) and reach bob, in order and once each, after hs2 starts
// again.
func TestFederationQueueSurvivesDowntime(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		sendText(t, sr.hs1, sr.alice, sr.roomID, "before")
		sr.bobS.waitFor(t, sr.roomID, "the first message", func(evs []timelineEvent) bool {
			return len(messagesFrom(evs, sr.alice.UserID)) == 1
		})

		sr.hs2.Stop()
		var sent []string
		for i := range 5 {
			b := fmt.Sprintf("while down %d", i)
			sendText(t, sr.hs1, sr.alice, sr.roomID, b)
			sent = append(sent, b)
		}
		// They are queued, and stay queued while hs2 is down (hs1 keeps trying).
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := sr.hs1.Federation.Sender().Pending(context.Background(), sr.name2)
			if err != nil {
				t.Fatal(err)
			}
			if n == 5 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("queued for hs2: %d, want 5", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(700 * time.Millisecond) // a few failed attempts
		if n, _ := sr.hs1.Federation.Sender().Pending(context.Background(), sr.name2); n != 5 {
			t.Fatalf("queued for hs2 while it is down: %d, want 5", n)
		}

		// A state change while hs2 is down, so that the graph forks when bob talks before
		// hs2 has caught up.
		if r := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(sr.roomID)+"/state/m.room.topic/", sr.alice.AccessToken,
			map[string]any{"topic": "set while hs2 was down"}); r.Status != 200 {
			t.Fatalf("topic: %d %s", r.Status, r.Raw)
		}

		sr.hs2 = sr.hs2.Restart(t)
		sr.bobS.hs = sr.hs2
		sendText(t, sr.hs2, sr.bob, sr.roomID, "bob is back")
		want := append([]string{"before"}, sent...)
		sr.bobS.waitFor(t, sr.roomID, "the messages sent while hs2 was down", func(evs []timelineEvent) bool {
			return len(messagesFrom(evs, sr.alice.UserID)) >= len(want)
		})
		sr.bobS.once(t, 300)
		if got := messagesFrom(sr.bobS.rooms[sr.roomID], sr.alice.UserID); !slices.Equal(got, want) {
			t.Fatalf("bob got %q, want %q", got, want)
		}
		noDuplicates(t, "bob", sr.bobS.rooms[sr.roomID])
		waitQueueEmpty(t, sr.hs1, sr.name2)
		sr.aliceS.waitFor(t, sr.roomID, "bob's message after the restart", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, sr.bob.UserID), "bob is back")
		})

		// Whatever the order, both servers agree on the state, and the next events join the
		// branches.
		sendText(t, sr.hs1, sr.alice, sr.roomID, "after the fork")
		sendText(t, sr.hs2, sr.bob, sr.roomID, "bob after the fork")
		sr.bobS.waitFor(t, sr.roomID, "alice after the fork", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, sr.alice.UserID), "after the fork")
		})
		sr.aliceS.waitFor(t, sr.roomID, "bob after the fork", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, sr.bob.UserID), "bob after the fork")
		})
		for _, hs := range []*servertest.Server{sr.hs1, sr.hs2} {
			tok := sr.alice.AccessToken
			if hs == sr.hs2 {
				tok = sr.bob.AccessToken
			}
			r := hs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(sr.roomID)+"/state/m.room.topic/", tok, nil)
			if r.Str("topic") != "set while hs2 was down" {
				t.Errorf("%s: topic %d %s", hs.Config.ServerName, r.Status, r.Raw)
			}
		}
		// alice's next event follows both branches (hers and bob's concurrent one): one
		// extremity left on both servers.
		sendText(t, sr.hs1, sr.alice, sr.roomID, "merge")
		sr.bobS.waitFor(t, sr.roomID, "alice's merge", func(evs []timelineEvent) bool {
			return slices.Contains(messagesFrom(evs, sr.alice.UserID), "merge")
		})
		for _, hs := range []*servertest.Server{sr.hs1, sr.hs2} {
			waitExtremities(t, hs, sr.roomID, 1)
		}
	})
}

// waitExtremities waits until a room has n forward extremities on hs.
func waitExtremities(t testing.TB, hs *servertest.Server, roomID string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		exts, err := hs.Store.Read().ForwardExtremities(context.Background(), roomID)
		if err != nil {
			t.Fatal(err)
		}
		if len(exts) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: forward extremities %v, want %d", hs.Config.ServerName, exts, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
