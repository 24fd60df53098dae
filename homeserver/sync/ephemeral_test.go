package sync_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// ephSync is the part of a /sync response the ephemeral tests read.
type ephSync struct {
	NextBatch string `json:"next_batch"`
	Presence  struct {
		Events []event `json:"events"`
	} `json:"presence"`
	AccountData struct {
		Events []event `json:"events"`
	} `json:"account_data"`
	Rooms struct {
		Join map[string]struct {
			Ephemeral struct {
				Events []json.RawMessage `json:"events"`
			} `json:"ephemeral"`
			AccountData struct {
				Events []event `json:"events"`
			} `json:"account_data"`
			Unread       *unread           `json:"unread_notifications"`
			ThreadUnread map[string]unread `json:"unread_thread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

type unread struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

type typingEvent struct {
	Type    string `json:"type"`
	Content struct {
		UserIDs []string `json:"user_ids"`
	} `json:"content"`
}

// receiptContent is m.receipt's content: event → type → user → receipt.
type receiptContent map[string]map[string]map[string]struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id"`
}

func ephDo(t testing.TB, s *servertest.Server, u servertest.User, params ...string) ephSync {
	t.Helper()
	res := s.Do(t, "GET", syncPath(params...), u.AccessToken, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("sync %v: %d %s", params, res.Status, res.Raw)
	}
	var out ephSync
	if err := json.Unmarshal(res.Raw, &out); err != nil {
		t.Fatalf("sync: decode: %v", err)
	}
	return out
}

// typingIn returns the user_ids of the room's m.typing event, and whether there was one.
func (r ephSync) typingIn(roomID string) ([]string, bool) {
	for _, raw := range r.Rooms.Join[roomID].Ephemeral.Events {
		var e typingEvent
		if json.Unmarshal(raw, &e) == nil && e.Type == "m.typing" {
			return e.Content.UserIDs, true
		}
	}
	return nil, false
}

// receiptsIn merges the room's m.receipt events.
func (r ephSync) receiptsIn(roomID string) receiptContent {
	out := receiptContent{}
	for _, raw := range r.Rooms.Join[roomID].Ephemeral.Events {
		var e struct {
			Type    string         `json:"type"`
			Content receiptContent `json:"content"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Type != "m.receipt" {
			continue
		}
		for ev, types := range e.Content {
			if out[ev] == nil {
				out[ev] = types
				continue
			}
			for typ, users := range types {
				out[ev][typ] = users
			}
		}
	}
	return out
}

func (r ephSync) presenceOf(userID string) *event {
	for i, e := range r.Presence.Events {
		if e.Type == "m.presence" && e.Sender == userID {
			return &r.Presence.Events[i]
		}
	}
	return nil
}

// syncUntil long-polls from since until cond holds for a response, and returns that response.
func syncUntil(t testing.TB, s *servertest.Server, u servertest.User, since string, total time.Duration, cond func(ephSync) bool) ephSync {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		res := ephDo(t, s, u, "since", since, "timeout", "1000")
		if cond(res) {
			return res
		}
		since = res.NextBatch
		if time.Now().After(deadline) {
			t.Fatalf("sync condition not met within %v; last response %+v", total, res)
		}
	}
}

// twoInRoom registers alice and bob and puts them in a public room of alice's.
func twoInRoom(t testing.TB, s *servertest.Server) (alice, bob servertest.User, roomID string) {
	alice = s.Register(t, "alice", "password-alice")
	bob = s.Register(t, "bob", "password-bob")
	roomID = newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	membership(t, s, bob, roomID, "join", nil)
	return alice, bob, roomID
}

func typingPath(roomID, userID string) string {
	return roomPath(roomID, "/typing/"+url.PathEscape(userID))
}

func TestTypingExpires(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		carol := s.Register(t, "carol", "password-carol")
		start := ephDo(t, s, bob)

		// Only for yourself, and only in rooms you are joined to.
		if res := s.Do(t, "PUT", typingPath(roomID, carol.UserID), carol.AccessToken, map[string]any{"typing": true, "timeout": 1000}); res.Status != 403 || res.Errcode() != "M_FORBIDDEN" {
			t.Errorf("typing by a non-member: %d %s", res.Status, res.Raw)
		}
		if res := s.Do(t, "PUT", typingPath(roomID, bob.UserID), alice.AccessToken, map[string]any{"typing": true}); res.Status != 403 {
			t.Errorf("typing for someone else: %d %s", res.Status, res.Raw)
		}
		if res := s.Do(t, "PUT", typingPath(roomID, alice.UserID), alice.AccessToken, map[string]any{"timeout": 1000}); res.Status != 400 {
			t.Errorf("typing without typing: %d %s", res.Status, res.Raw)
		}

		must(t, "typing", s.Do(t, "PUT", typingPath(roomID, alice.UserID), alice.AccessToken, map[string]any{"typing": true, "timeout": 1500}))
		res := ephDo(t, s, bob, "since", start.NextBatch, "timeout", "5000")
		if users, ok := res.typingIn(roomID); !ok || !slices.Equal(users, []string{alice.UserID}) {
			t.Fatalf("typing after start: %v %v; %+v", users, ok, res)
		}
		// Nobody does anything: the long poll is woken by the expiry with an empty list.
		begun := time.Now()
		res = ephDo(t, s, bob, "since", res.NextBatch, "timeout", "10000")
		users, ok := res.typingIn(roomID)
		if !ok || len(users) != 0 {
			t.Fatalf("after expiry: %v %v; %+v", users, ok, res)
		}
		if waited := time.Since(begun); waited > 5*time.Second {
			t.Errorf("the expiry reached the long poll after %v", waited)
		}
		// An initial sync shows no typing, and the list stays empty.
		if _, ok := ephDo(t, s, bob).typingIn(roomID); ok {
			t.Errorf("initial sync after expiry has m.typing")
		}

		// Stopping explicitly also sends the empty list.
		must(t, "typing", s.Do(t, "PUT", typingPath(roomID, alice.UserID), alice.AccessToken, map[string]any{"typing": true, "timeout": 30000}))
		res = syncUntil(t, s, bob, res.NextBatch, 5*time.Second, func(r ephSync) bool { u, ok := r.typingIn(roomID); return ok && len(u) == 1 })
		must(t, "stop typing", s.Do(t, "PUT", typingPath(roomID, alice.UserID), alice.AccessToken, map[string]any{"typing": false}))
		syncUntil(t, s, bob, res.NextBatch, 5*time.Second, func(r ephSync) bool { u, ok := r.typingIn(roomID); return ok && len(u) == 0 })
	})
}

func receiptPath(roomID, typ, eventID string) string {
	return roomPath(roomID, "/receipt/"+typ+"/"+url.PathEscape(eventID))
}

func TestReceipts(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		carol := s.Register(t, "carol", "password-carol")
		ev1 := send(t, s, alice, roomID, "one")
		ev2 := send(t, s, alice, roomID, "two")
		start := ephDo(t, s, bob)

		for _, c := range []struct {
			name, path string
			user       servertest.User
			body       any
			status     int
			errcode    string
		}{
			{"unknown type", receiptPath(roomID, "m.seen", ev1), bob, map[string]any{}, 400, "M_INVALID_PARAM"},
			{"unknown event", receiptPath(roomID, "m.read", "$nope"), bob, map[string]any{}, 404, "M_NOT_FOUND"},
			{"non-member", receiptPath(roomID, "m.read", ev1), carol, map[string]any{}, 403, "M_FORBIDDEN"},
			{"empty thread_id", receiptPath(roomID, "m.read", ev1), bob, map[string]any{"thread_id": ""}, 400, "M_INVALID_PARAM"},
			{"thread_id not a string", receiptPath(roomID, "m.read", ev1), bob, map[string]any{"thread_id": 1}, 400, "M_INVALID_PARAM"},
			{"thread_id with m.fully_read", receiptPath(roomID, "m.fully_read", ev1), bob, map[string]any{"thread_id": "main"}, 400, "M_INVALID_PARAM"},
			{"event not in that thread", receiptPath(roomID, "m.read", ev1), bob, map[string]any{"thread_id": ev2}, 400, "M_INVALID_PARAM"},
		} {
			if res := s.Do(t, "POST", c.path, c.user.AccessToken, c.body); res.Status != c.status || res.Errcode() != c.errcode {
				t.Errorf("%s: %d %s, want %d %s", c.name, res.Status, res.Raw, c.status, c.errcode)
			}
		}

		// Public receipt of alice: bob sees it, with a ts and no thread_id.
		must(t, "receipt", s.Do(t, "POST", receiptPath(roomID, "m.read", ev1), alice.AccessToken, map[string]any{}))
		res := syncUntil(t, s, bob, start.NextBatch, 5*time.Second, func(r ephSync) bool { return len(r.receiptsIn(roomID)) > 0 })
		got := res.receiptsIn(roomID)
		if r, ok := got[ev1]["m.read"][alice.UserID]; !ok || r.TS == 0 || r.ThreadID != "" {
			t.Errorf("bob's receipts: %+v", got)
		}

		// A private receipt is only for its owner.
		must(t, "private receipt", s.Do(t, "POST", receiptPath(roomID, "m.read.private", ev2), alice.AccessToken, map[string]any{}))
		after := ephDo(t, s, bob, "since", res.NextBatch, "timeout", "300")
		if r := after.receiptsIn(roomID); len(r) != 0 {
			t.Errorf("bob sees alice's private receipt: %+v", r)
		}
		if r := ephDo(t, s, bob).receiptsIn(roomID); len(r[ev2]) != 0 || r[ev1]["m.read"][alice.UserID].TS == 0 {
			t.Errorf("bob's initial sync receipts: %+v", r)
		}
		mine := ephDo(t, s, alice).receiptsIn(roomID)
		if _, ok := mine[ev2]["m.read.private"][alice.UserID]; !ok {
			t.Errorf("alice does not see her private receipt: %+v", mine)
		}

		// Threaded receipts keep their thread_id.
		must(t, "threaded receipt", s.Do(t, "POST", receiptPath(roomID, "m.read", ev2), alice.AccessToken, map[string]any{"thread_id": "main"}))
		res = syncUntil(t, s, bob, after.NextBatch, 5*time.Second, func(r ephSync) bool { return len(r.receiptsIn(roomID)) > 0 })
		if r := res.receiptsIn(roomID)[ev2]["m.read"][alice.UserID]; r.ThreadID != "main" {
			t.Errorf("threaded receipt: %+v", res.receiptsIn(roomID))
		}
		root := send(t, s, alice, roomID, "thread root")
		reply := must(t, "thread reply", s.Do(t, "PUT", roomPath(roomID, fmt.Sprintf("/send/m.room.message/t%d", txn.Add(1))), alice.AccessToken,
			map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})).Str("event_id")
		must(t, "receipt in thread", s.Do(t, "POST", receiptPath(roomID, "m.read", reply), bob.AccessToken, map[string]any{"thread_id": root}))
		if r := ephDo(t, s, alice).receiptsIn(roomID)[reply]["m.read"][bob.UserID]; r.ThreadID != root {
			t.Errorf("receipt in a thread: %+v", r)
		}

		// An older token (without the receipts part) gets the current receipts.
		parts := strings.Split(res.NextBatch, "_")
		old := ephDo(t, s, bob, "since", parts[0]+"_"+parts[1])
		if r := old.receiptsIn(roomID); r[ev2]["m.read"][alice.UserID].ThreadID != "main" || len(r[ev2]["m.read.private"]) != 0 {
			t.Errorf("receipts for a two-part token: %+v", r)
		}
	})
}

func TestReadMarkers(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		ev := send(t, s, bob, roomID, "hello")
		start := ephDo(t, s, bob)
		must(t, "read markers", s.Do(t, "POST", roomPath(roomID, "/read_markers"), alice.AccessToken,
			map[string]any{"m.fully_read": ev, "m.read": ev}))

		data := must(t, "get m.fully_read", s.Do(t, "GET", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/rooms/"+url.PathEscape(roomID)+
			"/account_data/m.fully_read", alice.AccessToken, nil))
		if data.Str("event_id") != ev {
			t.Errorf("m.fully_read account data: %s", data.Raw)
		}
		res := ephDo(t, s, alice)
		var found bool
		for _, e := range res.Rooms.Join[roomID].AccountData.Events {
			found = found || e.Type == "m.fully_read" && e.Content["event_id"] == ev
		}
		if !found {
			t.Errorf("sync lacks m.fully_read: %+v", res.Rooms.Join[roomID].AccountData)
		}
		got := syncUntil(t, s, bob, start.NextBatch, 5*time.Second, func(r ephSync) bool { return len(r.receiptsIn(roomID)) > 0 })
		if _, ok := got.receiptsIn(roomID)[ev]["m.read"][alice.UserID]; !ok {
			t.Errorf("bob lacks alice's m.read from read_markers: %+v", got.receiptsIn(roomID))
		}
		if _, ok := got.receiptsIn(roomID)[ev]["m.fully_read"]; ok {
			t.Errorf("m.fully_read appears as a receipt")
		}

		// The receipt endpoint with m.fully_read sets the marker too; unknown events are refused.
		ev2 := send(t, s, bob, roomID, "again")
		must(t, "fully_read receipt", s.Do(t, "POST", receiptPath(roomID, "m.fully_read", ev2), alice.AccessToken, map[string]any{}))
		data = must(t, "get m.fully_read", s.Do(t, "GET", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/rooms/"+url.PathEscape(roomID)+
			"/account_data/m.fully_read", alice.AccessToken, nil))
		if data.Str("event_id") != ev2 {
			t.Errorf("m.fully_read after the receipt endpoint: %s", data.Raw)
		}
		if res := s.Do(t, "POST", roomPath(roomID, "/read_markers"), alice.AccessToken, map[string]any{"m.fully_read": "$unknown"}); res.Status != 404 {
			t.Errorf("read marker on an unknown event: %d %s", res.Status, res.Raw)
		}
	})
}

func TestUnreadCounts(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		count := func(r ephSync) int {
			room, ok := r.Rooms.Join[roomID]
			if !ok || room.Unread == nil {
				t.Fatalf("room or unread_notifications missing: %+v", r)
			}
			return room.Unread.NotificationCount
		}
		send(t, s, bob, roomID, "mine do not count")
		res := ephDo(t, s, bob)
		if n := count(res); n != 0 {
			t.Errorf("unread before any message of others: %d", n)
		}
		send(t, s, alice, roomID, "one")
		last := send(t, s, alice, roomID, "two")
		res = ephDo(t, s, bob, "since", res.NextBatch, "timeout", "5000")
		if n := count(res); n != 2 {
			t.Errorf("unread after two messages: %d", n)
		}
		must(t, "receipt", s.Do(t, "POST", receiptPath(roomID, "m.read.private", last), bob.AccessToken, map[string]any{}))
		res = ephDo(t, s, bob, "since", res.NextBatch, "timeout", "5000")
		if n := count(res); n != 0 {
			t.Errorf("unread after the read receipt: %d", n)
		}
		send(t, s, alice, roomID, "three")
		res = ephDo(t, s, bob, "since", res.NextBatch, "timeout", "5000")
		if n := count(res); n != 1 {
			t.Errorf("unread after one more: %d", n)
		}

		// Per thread, when the filter asks for it.
		root := send(t, s, alice, roomID, "root")
		for i := range 2 {
			must(t, "thread reply", s.Do(t, "PUT", roomPath(roomID, fmt.Sprintf("/send/m.room.message/t%d", txn.Add(1))), alice.AccessToken,
				map[string]any{"msgtype": "m.text", "body": fmt.Sprint("reply ", i),
					"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}))
		}
		threaded := ephDo(t, s, bob, "filter", `{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		if n := count(threaded); n != 2 {
			t.Errorf("main timeline unread: %d", n)
		}
		if th := threaded.Rooms.Join[roomID].ThreadUnread[root]; th.NotificationCount != 2 {
			t.Errorf("thread unread: %+v", threaded.Rooms.Join[roomID].ThreadUnread)
		}
		if n := count(ephDo(t, s, bob)); n != 4 {
			t.Errorf("unread without thread counts: %d", n)
		}
	})
}

func presencePath(userID string) string {
	return csAPI + "/presence/" + url.PathEscape(userID) + "/status"
}

func TestPresence(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, _ := twoInRoom(t, s)
		carol := s.Register(t, "carol", "password-carol")
		bobStart := ephDo(t, s, bob, "set_presence", "offline")
		carolStart := ephDo(t, s, carol, "set_presence", "offline")

		if res := s.Do(t, "PUT", presencePath(bob.UserID), alice.AccessToken, map[string]any{"presence": "online"}); res.Status != 403 {
			t.Errorf("setting someone else's presence: %d %s", res.Status, res.Raw)
		}
		if res := s.Do(t, "PUT", presencePath(alice.UserID), alice.AccessToken, map[string]any{"presence": "away"}); res.Status != 400 {
			t.Errorf("unknown presence: %d %s", res.Status, res.Raw)
		}
		must(t, "set presence", s.Do(t, "PUT", presencePath(alice.UserID), alice.AccessToken,
			map[string]any{"presence": "online", "status_msg": "at work"}))
		res := syncUntil(t, s, bob, bobStart.NextBatch, 5*time.Second, func(r ephSync) bool { return r.presenceOf(alice.UserID) != nil })
		p := res.presenceOf(alice.UserID)
		if p.Content["presence"] != "online" || p.Content["status_msg"] != "at work" || p.Content["currently_active"] != true {
			t.Errorf("alice's presence in bob's sync: %+v", p.Content)
		}
		if _, ok := p.Content["last_active_ago"].(float64); !ok {
			t.Errorf("no last_active_ago: %+v", p.Content)
		}
		got := must(t, "get presence", s.Do(t, "GET", presencePath(alice.UserID), bob.AccessToken, nil))
		if got.Str("presence") != "online" || got.Str("status_msg") != "at work" {
			t.Errorf("GET presence: %s", got.Raw)
		}
		// A stranger: 403 on GET, nothing in sync.
		if res := s.Do(t, "GET", presencePath(alice.UserID), carol.AccessToken, nil); res.Status != 403 || res.Errcode() != "M_FORBIDDEN" {
			t.Errorf("stranger GET: %d %s", res.Status, res.Raw)
		}
		if r := ephDo(t, s, carol, "since", carolStart.NextBatch, "set_presence", "offline"); r.presenceOf(alice.UserID) != nil {
			t.Errorf("stranger's sync has alice's presence")
		}

		must(t, "set unavailable", s.Do(t, "PUT", presencePath(alice.UserID), alice.AccessToken,
			map[string]any{"presence": "unavailable", "status_msg": "lunch"}))
		res = syncUntil(t, s, bob, res.NextBatch, 5*time.Second, func(r ephSync) bool {
			p := r.presenceOf(alice.UserID)
			return p != nil && p.Content["presence"] == "unavailable"
		})
		if p := res.presenceOf(alice.UserID); p.Content["status_msg"] != "lunch" || p.Content["currently_active"] != false {
			t.Errorf("unavailable presence: %+v", p.Content)
		}
		if got := must(t, "get own presence", s.Do(t, "GET", presencePath(alice.UserID), alice.AccessToken, nil)); got.Str("presence") != "unavailable" {
			t.Errorf("own GET: %s", got.Raw)
		}
	})
}

func TestPresenceTimeouts(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, _ := twoInRoom(t, s)
		bobStart := ephDo(t, s, bob, "set_presence", "offline")
		// One sync counts as activity: alice is online, then idle, then gone.
		ephDo(t, s, alice)
		state := func() string {
			return must(t, "get presence", s.Do(t, "GET", presencePath(alice.UserID), bob.AccessToken, nil)).Str("presence")
		}
		if st := state(); st != "online" {
			t.Fatalf("after a sync alice is %q", st)
		}
		res := syncUntil(t, s, bob, bobStart.NextBatch, 5*time.Second, func(r ephSync) bool {
			p := r.presenceOf(alice.UserID)
			return p != nil && p.Content["presence"] == "unavailable"
		})
		syncUntil(t, s, bob, res.NextBatch, 10*time.Second, func(r ephSync) bool {
			p := r.presenceOf(alice.UserID)
			return p != nil && p.Content["presence"] == "offline"
		})
		if st := state(); st != "offline" {
			t.Errorf("after the offline timeout alice is %q", st)
		}
		// A long poll in progress keeps its user online past the timeouts.
		done := make(chan struct{})
		go func() {
			defer close(done)
			ephDo(t, s, alice, "since", res.NextBatch, "timeout", "2500", "filter", `{"presence":{"not_types":["*"]},"room":{"rooms":[]}}`)
		}()
		servertest.Eventually(t, 2*time.Second, func() error {
			if st := state(); st != "online" {
				return fmt.Errorf("alice is %q while syncing", st)
			}
			return nil
		})
		time.Sleep(1500 * time.Millisecond) // past both timeouts, while the long poll is parked
		if st := state(); st != "online" {
			t.Errorf("alice is %q during a long poll", st)
		}
		<-done
	}, func(c *config.Config) {
		c.Presence.IdleTimeout = config.Duration(400 * time.Millisecond)
		c.Presence.OfflineTimeout = config.Duration(1200 * time.Millisecond)
	})
}

func TestPresenceDisabled(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, _ := twoInRoom(t, s)
		must(t, "set presence", s.Do(t, "PUT", presencePath(alice.UserID), alice.AccessToken,
			map[string]any{"presence": "online", "status_msg": "hidden"}))
		ephDo(t, s, alice)
		got := must(t, "get presence", s.Do(t, "GET", presencePath(alice.UserID), bob.AccessToken, nil))
		if got.Str("presence") != "offline" || got.Str("status_msg") != "" {
			t.Errorf("GET with presence off: %s", got.Raw)
		}
		if r := ephDo(t, s, bob); len(r.Presence.Events) != 0 {
			t.Errorf("sync with presence off: %+v", r.Presence.Events)
		}
	}, func(c *config.Config) { c.Presence.Enabled = false })
}
