package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

const csAPI = "/_matrix/client/v3"

// syncResp is the part of a /sync response the tests read.
type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]roomResp `json:"join"`
		Leave  map[string]roomResp `json:"leave"`
		Invite map[string]struct {
			InviteState struct {
				Events []event `json:"events"`
			} `json:"invite_state"`
		} `json:"invite"`
	} `json:"rooms"`
	AccountData struct {
		Events []event `json:"events"`
	} `json:"account_data"`
}

type roomResp struct {
	Summary map[string]any `json:"summary"`
	State   struct {
		Events []event `json:"events"`
	} `json:"state"`
	Timeline struct {
		Events    []event `json:"events"`
		Limited   bool    `json:"limited"`
		PrevBatch string  `json:"prev_batch"`
	} `json:"timeline"`
	AccountData struct {
		Events []event `json:"events"`
	} `json:"account_data"`
	Ephemeral *struct {
		Events []event `json:"events"`
	} `json:"ephemeral"`
}

type event struct {
	EventID  string         `json:"event_id"`
	Type     string         `json:"type"`
	StateKey *string        `json:"state_key"`
	Sender   string         `json:"sender"`
	Content  map[string]any `json:"content"`
	Unsigned map[string]any `json:"unsigned"`
}

func (e event) body() string { s, _ := e.Content["body"].(string); return s }

// doSync calls /sync and decodes the response; params are key, value pairs.
func doSync(t testing.TB, s *servertest.Server, u servertest.User, params ...string) syncResp {
	t.Helper()
	res := s.Do(t, "GET", syncPath(params...), u.AccessToken, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("sync %v: %d %s", params, res.Status, res.Raw)
	}
	var out syncResp
	if err := json.Unmarshal(res.Raw, &out); err != nil {
		t.Fatalf("sync: decode: %v", err)
	}
	return out
}

func syncPath(params ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	return csAPI + "/sync?" + q.Encode()
}

func roomPath(roomID, rest string) string { return csAPI + "/rooms/" + url.PathEscape(roomID) + rest }

func must(t testing.TB, what string, res servertest.Response) servertest.Response {
	t.Helper()
	if res.Status != http.StatusOK {
		t.Fatalf("%s: %d %s", what, res.Status, res.Raw)
	}
	return res
}

func newRoom(t testing.TB, s *servertest.Server, u servertest.User, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	return must(t, "createRoom", s.Do(t, "POST", csAPI+"/createRoom", u.AccessToken, body)).Str("room_id")
}

var txn atomic.Int64

func send(t testing.TB, s *servertest.Server, u servertest.User, roomID, body string) string {
	t.Helper()
	return must(t, "send", s.Do(t, "PUT", roomPath(roomID, fmt.Sprintf("/send/m.room.message/t%d", txn.Add(1))), u.AccessToken,
		map[string]any{"msgtype": "m.text", "body": body})).Str("event_id")
}

// waitParked waits until n long polls are parked on the server's notifier.
func waitParked(t testing.TB, s *servertest.Server, n int64) {
	t.Helper()
	servertest.Eventually(t, 5*time.Second, func() error {
		if got := s.Sync.Waiting(); got != n {
			return fmt.Errorf("%d long polls parked, want %d", got, n)
		}
		return nil
	})
}

func membership(t testing.TB, s *servertest.Server, u servertest.User, roomID, action string, body map[string]any) {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	must(t, action, s.Do(t, "POST", roomPath(roomID, "/"+action), u.AccessToken, body))
}

func bodies(evs []event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}

func findState(evs []event, typ, key string) *event {
	for i, e := range evs {
		if e.Type == typ && e.StateKey != nil && *e.StateKey == key {
			return &evs[i]
		}
	}
	return nil
}

func limitFilter(n int) string { return fmt.Sprintf(`{"room":{"timeline":{"limit":%d}}}`, n) }

func TestInitialSync(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		bob := s.Register(t, "bob", "password-bob")
		roomID := newRoom(t, s, alice, map[string]any{"name": "Chat", "preset": "public_chat"})
		for i := range 3 {
			send(t, s, alice, roomID, fmt.Sprintf("m%d", i))
		}
		must(t, "account data", s.Do(t, "PUT", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/account_data/org.example.global",
			alice.AccessToken, map[string]any{"a": 1}))
		must(t, "room account data", s.Do(t, "PUT", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/rooms/"+url.PathEscape(roomID)+
			"/account_data/org.example.room", alice.AccessToken, map[string]any{"b": 2}))
		secret := newRoom(t, s, alice, map[string]any{"name": "Secret", "preset": "private_chat",
			"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}}}})
		send(t, s, alice, secret, "hidden from invitees")
		membership(t, s, alice, secret, "invite", map[string]any{"user_id": bob.UserID})

		res := doSync(t, s, alice)
		if !strings.HasPrefix(res.NextBatch, "s") {
			t.Fatalf("next_batch %q", res.NextBatch)
		}
		r, ok := res.Rooms.Join[roomID]
		if !ok {
			t.Fatalf("joined room missing: %+v", res.Rooms.Join)
		}
		if got := bodies(r.Timeline.Events); !slices.Equal(got, []string{"m0", "m1", "m2"}) {
			t.Errorf("timeline messages %v", got)
		}
		all := append(append([]event(nil), r.State.Events...), r.Timeline.Events...)
		for _, typ := range []string{"m.room.create", "m.room.name", "m.room.join_rules", "m.room.power_levels"} {
			if findState(all, typ, "") == nil {
				t.Errorf("state and timeline lack %s", typ)
			}
		}
		for _, e := range r.State.Events {
			for _, te := range r.Timeline.Events {
				if e.EventID == te.EventID {
					t.Errorf("%s is both in state and timeline", e.EventID)
				}
			}
		}
		// With a small limit, the timeline does not start at the room's first event: it is limited
		// and the state holds what came before it.
		r = doSync(t, s, alice, "filter", limitFilter(3)).Rooms.Join[roomID]
		if got := bodies(r.Timeline.Events); !slices.Equal(got, []string{"m0", "m1", "m2"}) {
			t.Errorf("timeline messages with limit 3: %v", got)
		}
		if !r.Timeline.Limited || r.Timeline.PrevBatch == "" || findState(r.State.Events, "m.room.create", "") == nil {
			t.Errorf("limited %v prev_batch %q; create in state: %v", r.Timeline.Limited, r.Timeline.PrevBatch,
				findState(r.State.Events, "m.room.create", "") != nil)
		}
		if r.Summary["m.joined_member_count"] != float64(1) || r.Ephemeral == nil {
			t.Errorf("summary %v ephemeral %v", r.Summary, r.Ephemeral)
		}
		if len(r.AccountData.Events) != 1 || r.AccountData.Events[0].Type != "org.example.room" {
			t.Errorf("room account data %+v", r.AccountData.Events)
		}
		if len(res.AccountData.Events) == 0 || !slices.ContainsFunc(res.AccountData.Events, func(e event) bool {
			return e.Type == "org.example.global" && e.Content["a"] == float64(1)
		}) {
			t.Errorf("global account data %+v", res.AccountData.Events)
		}

		// Bob is invited to the secret room: invite_state, no timeline, not in join.
		res = doSync(t, s, bob)
		inv, ok := res.Rooms.Invite[secret]
		if !ok {
			t.Fatalf("invite missing: %+v", res.Rooms)
		}
		if _, ok := res.Rooms.Join[secret]; ok {
			t.Errorf("invited room in join")
		}
		st := inv.InviteState.Events
		if findState(st, "m.room.create", "") == nil || findState(st, "m.room.join_rules", "") == nil {
			t.Errorf("invite_state lacks create or join_rules: %+v", st)
		}
		if n := findState(st, "m.room.name", ""); n == nil || n.Content["name"] != "Secret" {
			t.Errorf("invite_state name %+v", n)
		}
		if m := findState(st, "m.room.member", bob.UserID); m == nil || m.Content["membership"] != "invite" || m.Sender != alice.UserID {
			t.Errorf("invite_state member %+v", m)
		}
		if slices.ContainsFunc(st, func(e event) bool { return e.Type == "m.room.message" || e.EventID != "" }) {
			t.Errorf("invite_state holds more than stripped state: %+v", st)
		}

		// Once joined, the secret room's history before the join stays hidden ("joined").
		membership(t, s, bob, secret, "join", nil)
		res = doSync(t, s, bob)
		if got := bodies(res.Rooms.Join[secret].Timeline.Events); len(got) != 0 {
			t.Errorf("bob sees history before his join: %v", got)
		}
		if findState(res.Rooms.Join[secret].Timeline.Events, "m.room.member", bob.UserID) == nil {
			t.Errorf("bob's join not in his timeline")
		}
	})
}

// collectMessages paginates /messages backwards from from down to to and returns the messages'
// bodies oldest first.
func collectMessages(t testing.TB, s *servertest.Server, u servertest.User, roomID, from, to string) []event {
	t.Helper()
	var out []event
	for from != "" {
		res := must(t, "messages", s.Do(t, "GET", roomPath(roomID, "/messages?dir=b&limit=7&from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to)), u.AccessToken, nil))
		var page struct {
			Chunk []event `json:"chunk"`
			End   string  `json:"end"`
		}
		if err := json.Unmarshal(res.Raw, &page); err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Chunk {
			out = append(out, e)
		}
		from = page.End
		if len(page.Chunk) == 0 {
			break
		}
	}
	slices.Reverse(out)
	return out
}

func TestIncrementalSync(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		quiet := newRoom(t, s, alice, nil)
		since := doSync(t, s, alice).NextBatch

		// Nothing happened: the same token, no rooms.
		res := doSync(t, s, alice, "since", since)
		if res.NextBatch != since || len(res.Rooms.Join) != 0 {
			t.Fatalf("empty incremental: %q %+v", res.NextBatch, res.Rooms.Join)
		}

		send(t, s, alice, roomID, "a")
		send(t, s, alice, roomID, "b")
		res = doSync(t, s, alice, "since", since, "filter", limitFilter(5))
		r := res.Rooms.Join[roomID]
		if got := bodies(r.Timeline.Events); !slices.Equal(got, []string{"a", "b"}) || r.Timeline.Limited || len(r.State.Events) != 0 {
			t.Errorf("incremental: %v limited %v state %d", got, r.Timeline.Limited, len(r.State.Events))
		}
		if _, ok := res.Rooms.Join[quiet]; ok {
			t.Errorf("quiet room in incremental sync")
		}
		// The sending device sees its transaction ID.
		if r.Timeline.Events[0].Unsigned["transaction_id"] == nil {
			t.Errorf("no transaction_id for the sending device: %+v", r.Timeline.Events[0].Unsigned)
		}
		since = res.NextBatch

		// More than the limit: the newest five, limited, and prev_batch leads to the rest.
		var want []string
		for i := range 17 {
			want = append(want, fmt.Sprintf("n%02d", i))
			send(t, s, alice, roomID, want[i])
		}
		must(t, "topic", s.Do(t, "PUT", roomPath(roomID, "/state/m.room.topic/"), alice.AccessToken, map[string]any{"topic": "gap"}))
		send(t, s, alice, roomID, "last")
		want = append(want, "last")
		res = doSync(t, s, alice, "since", since, "filter", limitFilter(5))
		r = res.Rooms.Join[roomID]
		if !r.Timeline.Limited || len(r.Timeline.Events) != 5 {
			t.Fatalf("limited %v, %d events", r.Timeline.Limited, len(r.Timeline.Events))
		}
		if topic := findState(r.State.Events, "m.room.topic", ""); topic == nil && findState(r.Timeline.Events, "m.room.topic", "") == nil {
			t.Errorf("topic changed in the gap is neither in state nor timeline: %+v", r.State.Events)
		}
		before := collectMessages(t, s, alice, roomID, r.Timeline.PrevBatch, since)
		got := append(bodies(before), bodies(r.Timeline.Events)...)
		if !slices.Equal(got, want) {
			t.Errorf("gap filled by /messages:\n got %v\nwant %v", got, want)
		}
		// next_batch works as a /messages token too.
		if m := collectMessages(t, s, alice, roomID, res.NextBatch, since); !slices.Equal(bodies(m), want) {
			t.Errorf("/messages from next_batch: %v", bodies(m))
		}

		// Bad tokens.
		for _, tok := range []string{"garbage", "s", "s1_x", "t1_2", "s-1_0", "s99999999_0"} {
			res := s.Do(t, "GET", syncPath("since", tok), alice.AccessToken, nil)
			if res.Status != http.StatusBadRequest || res.Errcode() != "M_INVALID_PARAM" {
				t.Errorf("since %q: %d %s", tok, res.Status, res.Raw)
			}
		}
	})
}

func TestLongPoll(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		bob := s.Register(t, "bob", "password-bob")
		carol := s.Register(t, "carol", "password-carol")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		membership(t, s, bob, roomID, "join", nil)
		other := newRoom(t, s, carol, nil)
		since := doSync(t, s, alice).NextBatch

		// No activity (carol's room is not alice's business): back after the timeout, same token.
		send(t, s, carol, other, "not for alice")
		start := time.Now()
		res := doSync(t, s, alice, "since", since, "timeout", "400")
		if el := time.Since(start); el < 400*time.Millisecond || len(res.Rooms.Join) != 0 {
			t.Errorf("idle long poll returned after %v with %+v", el, res.Rooms.Join)
		}
		if tok := doSync(t, s, alice, "since", res.NextBatch); len(tok.Rooms.Join) != 0 {
			t.Errorf("token of the idle poll skips nothing and shows nothing: %+v", tok.Rooms.Join)
		}

		// Bob sends while alice waits: she gets it at once.
		done := make(chan syncResp, 1)
		start = time.Now()
		go func() { done <- doSync(t, s, alice, "since", since, "timeout", "10000") }()
		waitParked(t, s, 1)
		id := send(t, s, bob, roomID, "hello alice")
		select {
		case res := <-done:
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("long poll took %v", el)
			}
			evs := res.Rooms.Join[roomID].Timeline.Events
			if len(evs) != 1 || evs[0].EventID != id {
				t.Errorf("woken with %+v", evs)
			}
		case <-time.After(8 * time.Second):
			t.Fatal("long poll did not return")
		}

		// Account data wakes too.
		since = doSync(t, s, alice).NextBatch
		go func() { done <- doSync(t, s, alice, "since", since, "timeout", "10000") }()
		waitParked(t, s, 1)
		must(t, "account data", s.Do(t, "PUT", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/account_data/org.example.x",
			alice.AccessToken, map[string]any{"x": true}))
		select {
		case res := <-done:
			if len(res.AccountData.Events) != 1 || res.AccountData.Events[0].Type != "org.example.x" {
				t.Errorf("woken with %+v", res.AccountData)
			}
		case <-time.After(8 * time.Second):
			t.Fatal("long poll did not return on account data")
		}

		// An invite wakes the invitee, who is in no room with anyone yet.
		since = doSync(t, s, carol).NextBatch
		go func() { done <- doSync(t, s, carol, "since", since, "timeout", "10000") }()
		waitParked(t, s, 1)
		membership(t, s, alice, roomID, "invite", map[string]any{"user_id": carol.UserID})
		select {
		case res := <-done:
			if _, ok := res.Rooms.Invite[roomID]; !ok {
				t.Errorf("woken without the invite: %+v", res.Rooms)
			}
		case <-time.After(8 * time.Second):
			t.Fatal("long poll did not return on invite")
		}
	})
}

func TestLongPollClientGone(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		since := doSync(t, s, alice).NextBatch
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+syncPath("since", since, "timeout", "60000"), nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		waitParked(t, s, 1)
		cancel()
		if err := <-errc; err == nil {
			t.Errorf("request finished without error")
		}
		servertest.Eventually(t, 5*time.Second, func() error {
			if n := s.Sync.Waiting(); n != 0 {
				return fmt.Errorf("%d long polls still parked after the client left", n)
			}
			return nil
		})
	})
}

func TestLeaveKickBan(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		bob := s.Register(t, "bob", "password-bob")
		kickRoom := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		leaveRoom := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		membership(t, s, bob, kickRoom, "join", nil)
		membership(t, s, bob, leaveRoom, "join", nil)
		since := doSync(t, s, bob).NextBatch

		send(t, s, alice, kickRoom, "before kick")
		membership(t, s, alice, kickRoom, "kick", map[string]any{"user_id": bob.UserID, "reason": "bye"})
		send(t, s, alice, kickRoom, "after kick")
		membership(t, s, bob, leaveRoom, "leave", nil)

		res := doSync(t, s, bob, "since", since)
		if len(res.Rooms.Join) != 0 {
			t.Errorf("rooms still joined: %v", res.Rooms.Join)
		}
		k, ok := res.Rooms.Leave[kickRoom]
		if !ok {
			t.Fatalf("kicked room not in leave: %+v", res.Rooms)
		}
		evs := k.Timeline.Events
		if got := bodies(evs); !slices.Equal(got, []string{"before kick"}) {
			t.Errorf("kicked room timeline %v", got)
		}
		if last := evs[len(evs)-1]; last.Type != "m.room.member" || *last.StateKey != bob.UserID || last.Content["membership"] != "leave" || last.Sender != alice.UserID {
			t.Errorf("kicked room timeline does not end with the kick: %+v", last)
		}
		l, ok := res.Rooms.Leave[leaveRoom]
		if !ok || len(l.Timeline.Events) != 1 || l.Timeline.Events[0].Sender != bob.UserID {
			t.Errorf("left room: %+v", l)
		}
		next := res.NextBatch
		if res := doSync(t, s, bob, "since", next); len(res.Rooms.Leave) != 0 {
			t.Errorf("leave repeated: %+v", res.Rooms.Leave)
		}

		// Initial sync: left rooms only with include_leave.
		if res := doSync(t, s, bob); len(res.Rooms.Leave) != 0 {
			t.Errorf("initial sync without include_leave lists left rooms: %v", res.Rooms.Leave)
		}
		res = doSync(t, s, bob, "filter", `{"room":{"include_leave":true}}`)
		if _, ok := res.Rooms.Leave[kickRoom]; !ok || len(res.Rooms.Leave) != 2 {
			t.Errorf("include_leave: %+v", res.Rooms.Leave)
		}
		if got := bodies(res.Rooms.Leave[kickRoom].Timeline.Events); slices.Contains(got, "after kick") {
			t.Errorf("left room shows events after the kick: %v", got)
		}

		// Ban shows up too.
		membership(t, s, bob, leaveRoom, "join", nil)
		next = doSync(t, s, bob).NextBatch
		membership(t, s, alice, leaveRoom, "ban", map[string]any{"user_id": bob.UserID})
		if res := doSync(t, s, bob, "since", next); res.Rooms.Leave[leaveRoom].Timeline.Events == nil {
			t.Errorf("ban not in leave: %+v", res.Rooms)
		}
	})
}

func TestSyncFilters(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		bob := s.Register(t, "bob", "password-bob")
		carol := s.Register(t, "carol", "password-carol")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		other := newRoom(t, s, alice, nil)
		membership(t, s, bob, roomID, "join", nil)
		membership(t, s, carol, roomID, "join", nil)
		send(t, s, bob, roomID, "from bob")
		send(t, s, alice, roomID, "from alice")

		// Stored filter by ID; rooms and types.
		fid := must(t, "filter", s.Do(t, "POST", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/filter", alice.AccessToken,
			map[string]any{"room": map[string]any{"not_rooms": []string{other}, "timeline": map[string]any{"types": []string{"m.room.mess*"}}}})).Str("filter_id")
		res := doSync(t, s, alice, "filter", fid)
		if _, ok := res.Rooms.Join[other]; ok {
			t.Errorf("not_rooms room present")
		}
		for _, e := range res.Rooms.Join[roomID].Timeline.Events {
			if e.Type != "m.room.message" {
				t.Errorf("filtered timeline has %s", e.Type)
			}
		}
		if got := bodies(res.Rooms.Join[roomID].Timeline.Events); !slices.Equal(got, []string{"from bob", "from alice"}) {
			t.Errorf("filtered timeline %v", got)
		}
		res2 := s.Do(t, "GET", syncPath("filter", "12345"), alice.AccessToken, nil)
		if res2.Status != http.StatusBadRequest || res2.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("unknown filter: %d %s", res2.Status, res2.Raw)
		}

		// Lazy-loaded members: the senders of the timeline and alice herself, not carol.
		res = doSync(t, s, alice, "filter", `{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true}}}`)
		st := res.Rooms.Join[roomID].State.Events
		if findState(st, "m.room.member", bob.UserID) == nil || findState(st, "m.room.member", alice.UserID) == nil {
			t.Errorf("lazy members lack bob or alice: %+v", st)
		}
		if findState(st, "m.room.member", carol.UserID) != nil {
			t.Errorf("lazy members include carol, who sent nothing")
		}
		if findState(st, "m.room.create", "") == nil {
			t.Errorf("lazy state lost the other state")
		}
	})
}

// TestConcurrentSendersAndSyncers: 5 senders x 40 messages into 2 rooms while 3 users long-poll in
// a loop with a small timeline limit, filling gaps from prev_batch with /messages. Every syncer
// must get every message exactly once, in the order /messages shows.
func TestConcurrentSendersAndSyncers(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		const senders, perSender, syncers = 5, 40, 3
		owner := s.Register(t, "owner", "password-owner")
		rooms := []string{newRoom(t, s, owner, map[string]any{"preset": "public_chat"}), newRoom(t, s, owner, map[string]any{"preset": "public_chat"})}
		var sendUsers, syncUsers []servertest.User
		for i := range senders {
			sendUsers = append(sendUsers, s.Register(t, fmt.Sprintf("sender%d", i), "password-x"))
		}
		for i := range syncers {
			syncUsers = append(syncUsers, s.Register(t, fmt.Sprintf("syncer%d", i), "password-x"))
		}
		for _, u := range append(append([]servertest.User(nil), sendUsers...), syncUsers...) {
			for _, r := range rooms {
				membership(t, s, u, r, "join", nil)
			}
		}
		starts := make([]string, syncers)
		for i, u := range syncUsers {
			starts[i] = doSync(t, s, u).NextBatch
		}

		type received struct {
			byRoom map[string][]string // event IDs in arrival order
			err    error
		}
		results := make([]received, syncers)
		var polls, gaps atomic.Int64
		var wg gosync.WaitGroup
		total := senders * perSender
		deadline := time.Now().Add(20 * time.Second)
		for i, u := range syncUsers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := map[string][]string{}
				since, n := starts[i], 0
				for n < total && time.Now().Before(deadline) {
					res := doSync(t, s, u, "since", since, "timeout", "5000", "filter", limitFilter(4))
					for _, roomID := range rooms {
						r, ok := res.Rooms.Join[roomID]
						if !ok {
							continue
						}
						var evs []event
						if r.Timeline.Limited {
							gaps.Add(1)
							evs = collectMessages(t, s, u, roomID, r.Timeline.PrevBatch, since)
						}
						evs = append(evs, r.Timeline.Events...)
						for _, e := range evs {
							if e.Type == "m.room.message" {
								got[roomID] = append(got[roomID], e.EventID)
								n++
							}
						}
					}
					since = res.NextBatch
					polls.Add(1)
				}
				results[i] = received{byRoom: got}
			}()
		}
		for i, u := range sendUsers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range perSender {
					send(t, s, u, rooms[(i+k)%2], fmt.Sprintf("%d-%d", i, k))
				}
			}()
		}
		wg.Wait()
		t.Logf("%d syncs, %d limited timelines filled from prev_batch", polls.Load(), gaps.Load())

		for _, roomID := range rooms {
			var want []string
			for _, e := range collectMessages(t, s, owner, roomID, "s999999999", starts[0]) {
				if e.Type == "m.room.message" {
					want = append(want, e.EventID)
				}
			}
			if len(want) != total/2 {
				t.Errorf("room has %d messages, want %d", len(want), total/2)
			}
			for i, r := range results {
				if !slices.Equal(r.byRoom[roomID], want) {
					t.Errorf("syncer %d, room %s: got %d events, want %d in /messages order (first difference at %d)",
						i, roomID, len(r.byRoom[roomID]), len(want), firstDiff(r.byRoom[roomID], want))
				}
			}
		}
	})
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
