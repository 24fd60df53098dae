package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

const onlyMessages = `{"types":["m.room.message"]}`

// page is one /messages response.
type page struct {
	bodies     []string
	ids        []string
	start, end string
	hasEnd     bool
}

// getMessages GETs /messages with the query parameters (values are escaped here) and requires 200.
func getMessages(t *testing.T, s *servertest.Server, u servertest.User, roomID string, params ...string) page {
	t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		if params[i+1] != "" {
			q.Set(params[i], params[i+1])
		}
	}
	res := s.Do(t, "GET", roomPath(roomID, "/messages?"+q.Encode()), u.AccessToken, nil)
	want(t, "/messages?"+q.Encode(), res, http.StatusOK, "")
	chunk := events(t, res, "chunk")
	p := page{bodies: bodies(chunk), start: res.Str("start")}
	for _, e := range chunk {
		p.ids = append(p.ids, e["event_id"].(string))
	}
	p.end, p.hasEnd = res.JSON["end"].(string)
	if p.start == "" {
		t.Fatalf("/messages without start: %s", res.Raw)
	}
	return p
}

// paginate pages from `from` in dir with limit until end is absent and returns the bodies in the
// order received and the end token of every page.
func paginate(t *testing.T, s *servertest.Server, u servertest.User, roomID, dir, from string, limit int, filter string) (got, ends []string) {
	t.Helper()
	for i := 0; ; i++ {
		if i > 2000 {
			t.Fatalf("pagination dir=%s limit=%d does not end", dir, limit)
		}
		p := getMessages(t, s, u, roomID, "dir", dir, "from", from, "limit", fmt.Sprint(limit), "filter", filter)
		if len(p.ids) > limit {
			t.Fatalf("limit %d: got %d events", limit, len(p.ids))
		}
		got = append(got, p.bodies...)
		if !p.hasEnd {
			return got, ends
		}
		if p.end == from {
			t.Fatalf("end token %q did not move", p.end)
		}
		ends = append(ends, p.end)
		from = p.end
	}
}

// stateEventID is the event ID of a current state event, as u sees it.
func stateEventID(t *testing.T, s *servertest.Server, u servertest.User, roomID, typ, key string) string {
	t.Helper()
	res := s.Do(t, "GET", roomPath(roomID, "/state/"+typ+"/"+esc(key)+"?format=event"), u.AccessToken, nil)
	want(t, "GET state event "+typ, res, http.StatusOK, "")
	return res.Str("event_id")
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func requireSame(t *testing.T, what string, got, exp []string) {
	t.Helper()
	if !slices.Equal(got, exp) {
		t.Fatalf("%s: got %d events %v\nwant %d events %v", what, len(got), got, len(exp), exp)
	}
}

func TestMessagesPagination(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat", "name": "paging"})
		mustJoin(t, s, bob, roomID)
		const n = 120
		sent := make([]string, n) // oldest first
		for i := range sent {
			sent[i] = fmt.Sprintf("m%03d", i)
			sendText(t, s, alice, roomID, sent[i])
		}
		newestFirst := reversed(sent)

		for _, limit := range []int{1, 7, 50, 100} {
			t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
				back, ends := paginate(t, s, bob, roomID, "b", "", limit, onlyMessages)
				requireSame(t, "backward from the end", back, newestFirst)
				fwd, _ := paginate(t, s, bob, roomID, "f", "", limit, onlyMessages)
				requireSame(t, "forward from the start", fwd, sent)

				// Every backward end token is an exact boundary: forwards from it come exactly the
				// events of the pages before it, backwards from it exactly the rest.
				for k, tok := range ends {
					if limit < 50 && k%5 != 0 {
						continue // keep the test quick: a sample of the boundaries
					}
					seen := min((k+1)*limit, n)
					after, _ := paginate(t, s, bob, roomID, "f", tok, 100, onlyMessages)
					requireSame(t, fmt.Sprintf("forward from backward end #%d", k), after, sent[n-seen:])
					rest, _ := paginate(t, s, bob, roomID, "b", tok, 100, onlyMessages)
					requireSame(t, fmt.Sprintf("backward from backward end #%d", k), rest, newestFirst[seen:])
				}
			})
		}

		t.Run("forward tokens", func(t *testing.T) {
			var got []string
			from := ""
			for k := 0; ; k++ {
				p := getMessages(t, s, bob, roomID, "dir", "f", "from", from, "limit", "13", "filter", onlyMessages)
				got = append(got, p.bodies...)
				if !p.hasEnd {
					break
				}
				// Backwards from a forward end token: exactly what was already seen, newest first.
				if k%3 == 0 {
					back, _ := paginate(t, s, bob, roomID, "b", p.end, 100, onlyMessages)
					requireSame(t, fmt.Sprintf("backward from forward end #%d", k), back, reversed(got))
				}
				from = p.end
			}
			requireSame(t, "forward limit 13", got, sent)
		})

		t.Run("unfiltered", func(t *testing.T) {
			// Without a filter the state events of createRoom come last, each event exactly once.
			var ids []string
			from := ""
			var types []string
			for i := 0; ; i++ {
				res := s.Do(t, "GET", roomPath(roomID, "/messages?dir=b&limit=9&from="+url.QueryEscape(from)), bob.AccessToken, nil)
				want(t, "unfiltered page", res, http.StatusOK, "")
				for _, e := range events(t, res, "chunk") {
					ids = append(ids, e["event_id"].(string))
					types = append(types, e["type"].(string))
				}
				if from = res.Str("end"); from == "" {
					break
				}
				if i > 100 {
					t.Fatalf("does not end")
				}
			}
			uniq := map[string]bool{}
			for _, id := range ids {
				if uniq[id] {
					t.Fatalf("event %s returned twice", id)
				}
				uniq[id] = true
			}
			if types[len(types)-1] != "m.room.create" {
				t.Fatalf("oldest event is %s, want m.room.create", types[len(types)-1])
			}
			msgs := 0
			for _, ty := range types {
				if ty == "m.room.message" {
					msgs++
				}
			}
			// create, alice join, power levels, join rules, history visibility, guest access, name, bob join.
			if msgs != n || len(ids) != n+8 {
				t.Fatalf("unfiltered: %d events, %d messages; types %v", len(ids), msgs, types[n-1:])
			}
		})

		t.Run("to", func(t *testing.T) {
			_, ends := paginate(t, s, bob, roomID, "b", "", 10, onlyMessages)
			stop := ends[2] // after the 30 newest
			p := getMessages(t, s, bob, roomID, "dir", "b", "limit", "1000", "to", stop, "filter", onlyMessages)
			requireSame(t, "backward to a token", p.bodies, newestFirst[:30])
			p = getMessages(t, s, bob, roomID, "dir", "b", "limit", "7", "to", stop, "filter", onlyMessages)
			requireSame(t, "backward to a token, first page", p.bodies, newestFirst[:7])
			p = getMessages(t, s, bob, roomID, "dir", "f", "limit", "1000", "to", stop, "filter", onlyMessages)
			requireSame(t, "forward to a token", p.bodies, sent[:n-30])
			if p.hasEnd {
				next := getMessages(t, s, bob, roomID, "dir", "f", "limit", "1000", "from", p.end, "to", stop, "filter", onlyMessages)
				if len(next.bodies) != 0 {
					t.Fatalf("forward past to: %v", next.bodies)
				}
			}
		})

		t.Run("bad parameters", func(t *testing.T) {
			base := roomPath(roomID, "/messages")
			for _, tc := range []struct {
				query   string
				errcode string
			}{
				{"", "M_INVALID_PARAM"},
				{"?limit=5", "M_INVALID_PARAM"},
				{"?dir=x", "M_INVALID_PARAM"},
				{"?dir=b&from=garbage", "M_INVALID_PARAM"},
				{"?dir=b&from=t1_x", "M_INVALID_PARAM"},
				{"?dir=f&from=sNaN", "M_INVALID_PARAM"},
				{"?dir=b&to=garbage", "M_INVALID_PARAM"},
				{"?dir=b&limit=-1", "M_INVALID_PARAM"},
				{"?dir=b&limit=ten", "M_INVALID_PARAM"},
				{"?dir=b&filter=" + url.QueryEscape("{nope"), "M_NOT_JSON"},
				{"?dir=b&filter=" + url.QueryEscape("[]"), "M_BAD_JSON"},
			} {
				res := s.Do(t, "GET", base+tc.query, bob.AccessToken, nil)
				want(t, "/messages"+tc.query, res, http.StatusBadRequest, tc.errcode)
			}
			p := getMessages(t, s, bob, roomID, "dir", "b", "limit", "0")
			if len(p.ids) != 0 {
				t.Fatalf("limit=0 gave %d events", len(p.ids))
			}
			for _, f := range []string{onlyMessages, `{}`, `{"lazy_load_members":true}`, `{"not_types":["m.room.member"]}`} {
				p = getMessages(t, s, bob, roomID, "dir", "b", "limit", "0", "filter", f)
				if len(p.ids) != 0 {
					t.Fatalf("limit=0 with filter %s gave %d events", f, len(p.ids))
				}
			}
			// Without limit the default is 10.
			if p := getMessages(t, s, bob, roomID, "dir", "b", "filter", `{"lazy_load_members":true}`); len(p.ids) != 10 {
				t.Fatalf("default limit gave %d events", len(p.ids))
			}
		})
	})
}

// visibilityCase is what bob sees in a room with one history_visibility setting: messages sent
// before his invite, between invite and join, while joined, and after he left.
type visibilityCase struct {
	setting     string
	whileInvite []string // visible while bob is invited, before he joins
	afterLeave  []string // visible after bob left
	ownMember   []string // bob's own member events he sees after leaving
}

func TestHistoryVisibility(t *testing.T) {
	all := []string{"before invite", "after invite", "after join", "after leave"}
	cases := []visibilityCase{
		// His own member events are visible when the membership before or after them allows it: the
		// join and the leave always; the invite only where an invitee may see events.
		{"joined", nil, []string{"after join"}, []string{"join", "leave"}},
		{"invited", []string{"after invite"}, []string{"after invite", "after join"}, []string{"invite", "join", "leave"}},
		{"shared", nil, []string{"before invite", "after invite", "after join"}, []string{"invite", "join", "leave"}},
		{"world_readable", []string{"before invite", "after invite"}, all, []string{"invite", "join", "leave"}},
	}
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password") // never joins
		for _, tc := range cases {
			t.Run(tc.setting, func(t *testing.T) {
				roomID := newRoom(t, s, alice, map[string]any{"preset": "private_chat", "initial_state": []map[string]any{
					{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": tc.setting}}}})
				ids := map[string]string{}
				ids["before invite"] = sendText(t, s, alice, roomID, "before invite")
				mustInvite(t, s, alice, bob, roomID)
				ids["after invite"] = sendText(t, s, alice, roomID, "after invite")

				if got := allMessages(t, s, bob, roomID); !slices.Equal(got, tc.whileInvite) {
					t.Errorf("%s, invited: bob sees %v, want %v", tc.setting, got, tc.whileInvite)
				}
				mustJoin(t, s, bob, roomID)
				ids["after join"] = sendText(t, s, alice, roomID, "after join")
				want(t, "leave", member(t, s, bob, roomID, "leave", nil), http.StatusOK, "")
				ids["after leave"] = sendText(t, s, alice, roomID, "after leave")

				if got := allMessages(t, s, bob, roomID); !slices.Equal(got, tc.afterLeave) {
					t.Errorf("%s, after leaving: bob's /messages %v, want %v", tc.setting, got, tc.afterLeave)
				}
				var own []string
				for _, e := range allEvents(t, s, bob, roomID) {
					if e["type"] == "m.room.member" && e["state_key"] == bob.UserID {
						own = append(own, obj(e["content"])["membership"].(string))
					}
				}
				if !slices.Equal(own, tc.ownMember) {
					t.Errorf("%s: bob sees his own member events %v, want %v", tc.setting, own, tc.ownMember)
				}
				// Backward and forward agree.
				fwd, _ := paginate(t, s, bob, roomID, "f", "", 2, onlyMessages)
				if !slices.Equal(fwd, tc.afterLeave) {
					t.Errorf("%s: forward /messages %v, want %v", tc.setting, fwd, tc.afterLeave)
				}
				for _, body := range all {
					res := eventAs(t, s, bob, roomID, ids[body])
					if slices.Contains(tc.afterLeave, body) {
						want(t, tc.setting+": GET visible event "+body, res, http.StatusOK, "")
						if obj(res.JSON["content"])["body"] != body {
							t.Errorf("GET event %s: %s", body, res.Raw)
						}
					} else {
						want(t, tc.setting+": GET hidden event "+body, res, http.StatusNotFound, "M_NOT_FOUND")
					}
				}
				// /context of a hidden event is refused the same way.
				if !slices.Contains(tc.afterLeave, "after leave") {
					res := s.Do(t, "GET", roomPath(roomID, "/context/"+esc(ids["after leave"])), bob.AccessToken, nil)
					want(t, tc.setting+": context of hidden event", res, http.StatusNotFound, "M_NOT_FOUND")
				}

				// Someone who never joined.
				paths := []string{"/messages?dir=b", "/state", "/members", "/joined_members", "/event/" + esc(ids["before invite"]),
					"/state/m.room.history_visibility", "/context/" + esc(ids["before invite"])}
				for _, p := range paths {
					res := s.Do(t, "GET", roomPath(roomID, p), carol.AccessToken, nil)
					if tc.setting == "world_readable" {
						want(t, "outsider reads world_readable "+p, res, http.StatusOK, "")
					} else {
						want(t, "outsider reads "+tc.setting+" "+p, res, http.StatusForbidden, "M_FORBIDDEN")
					}
				}
				if tc.setting == "world_readable" {
					if got := allMessages(t, s, carol, roomID); !slices.Equal(got, all) {
						t.Errorf("outsider in world_readable room sees %v", got)
					}
				}
			})
		}

		t.Run("change of setting applies from the change on", func(t *testing.T) {
			roomID := newRoom(t, s, alice, map[string]any{"preset": "private_chat"})
			sendText(t, s, alice, roomID, "shared era")
			want(t, "set joined", s.Do(t, "PUT", roomPath(roomID, "/state/m.room.history_visibility"), alice.AccessToken,
				map[string]any{"history_visibility": "joined"}), http.StatusOK, "")
			sendText(t, s, alice, roomID, "joined era")
			mustInvite(t, s, alice, bob, roomID)
			mustJoin(t, s, bob, roomID)
			sendText(t, s, alice, roomID, "member era")
			if got := allMessages(t, s, bob, roomID); strings.Join(got, ",") != "shared era,member era" {
				t.Fatalf("bob sees %v, want [shared era member era]", got)
			}
		})
	})
}

func TestEventContext(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		sent := make([]string, 30)
		ids := make([]string, 30)
		for i := range sent {
			sent[i] = fmt.Sprintf("c%02d", i)
			ids[i] = sendText(t, s, alice, roomID, sent[i])
		}
		ctxOf := func(u servertest.User, i int, query string) servertest.Response {
			return s.Do(t, "GET", roomPath(roomID, "/context/"+esc(ids[i])+query), u.AccessToken, nil)
		}
		filter := "&filter=" + url.QueryEscape(onlyMessages)
		for _, tc := range []struct {
			at, limit          int
			before, afterCount int
		}{
			{15, 10, 5, 5},
			{15, 11, 5, 6},
			{2, 10, 2, 5},   // near the start: only two messages before
			{28, 10, 5, 1},  // near the end
			{15, 1, 0, 1},   // limit 1
			{15, 0, 0, 0},   // limit 0: the event alone
			{0, 100, 0, 29}, // the oldest message
		} {
			t.Run(fmt.Sprintf("at %d limit %d", tc.at, tc.limit), func(t *testing.T) {
				res := ctxOf(alice, tc.at, fmt.Sprintf("?limit=%d%s", tc.limit, filter))
				want(t, "/context", res, http.StatusOK, "")
				if obj(res.JSON["event"])["event_id"] != ids[tc.at] {
					t.Fatalf("context event %v", res.JSON["event"])
				}
				before := bodies(events(t, res, "events_before"))
				afterEvs := bodies(events(t, res, "events_after"))
				requireSame(t, "events_before (newest first)", before, reversed(sent[tc.at-tc.before:tc.at]))
				requireSame(t, "events_after", afterEvs, sent[tc.at+1:tc.at+1+tc.afterCount])
				start, end := res.Str("start"), res.Str("end")
				if start == "" || end == "" {
					t.Fatalf("context without start/end: %s", res.Raw)
				}
				// The tokens continue pagination without gap or repeat.
				older, _ := paginate(t, s, alice, roomID, "b", start, 100, onlyMessages)
				requireSame(t, "backward from start", older, reversed(sent[:tc.at-tc.before]))
				newer, _ := paginate(t, s, alice, roomID, "f", end, 100, onlyMessages)
				requireSame(t, "forward from end", newer, sent[tc.at+1+tc.afterCount:])
			})
		}
		// Without a filter the state events count as context too.
		res := ctxOf(alice, 0, "?limit=6")
		want(t, "/context unfiltered", res, http.StatusOK, "")
		if evs := events(t, res, "events_before"); len(evs) != 3 || evs[0]["type"] == "m.room.message" {
			t.Fatalf("unfiltered events_before of the first message: %v", evs)
		}
		want(t, "/context of unknown event", s.Do(t, "GET", roomPath(roomID, "/context/"+esc("$nope")), alice.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		want(t, "/context bad limit", ctxOf(alice, 3, "?limit=x"), http.StatusBadRequest, "M_INVALID_PARAM")
		// bob never joined, but the room is shared: 403 until he joins, then he sees it all.
		want(t, "/context by outsider", ctxOf(bob, 3, ""), http.StatusForbidden, "M_FORBIDDEN")
		mustJoin(t, s, bob, roomID)
		want(t, "/context after joining", ctxOf(bob, 3, ""), http.StatusOK, "")
	})
}

func TestMembersAndJoinedRooms(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		dave := s.Register(t, "dave", "dave password")
		want(t, "set displayname", s.Do(t, "PUT", csAPI+"/profile/"+esc(alice.UserID)+"/displayname", alice.AccessToken,
			map[string]any{"displayname": "Alice L."}), http.StatusOK, "")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		other := newRoom(t, s, alice, nil)
		mustJoin(t, s, bob, roomID)
		mustInvite(t, s, alice, carol, roomID)
		mustJoin(t, s, dave, roomID)
		want(t, "dave leaves", member(t, s, dave, roomID, "leave", nil), http.StatusOK, "")

		membersOf := func(query string) map[string]string {
			t.Helper()
			res := s.Do(t, "GET", roomPath(roomID, "/members"+query), alice.AccessToken, nil)
			want(t, "/members"+query, res, http.StatusOK, "")
			out := map[string]string{}
			for _, e := range events(t, res, "chunk") {
				if e["type"] != "m.room.member" {
					t.Fatalf("/members returned %v", e)
				}
				out[e["state_key"].(string)] = obj(e["content"])["membership"].(string)
			}
			return out
		}
		all := map[string]string{alice.UserID: "join", bob.UserID: "join", carol.UserID: "invite", dave.UserID: "leave"}
		for _, tc := range []struct {
			query string
			want  []string
		}{
			{"", []string{alice.UserID, bob.UserID, carol.UserID, dave.UserID}},
			{"?membership=join", []string{alice.UserID, bob.UserID}},
			{"?membership=invite", []string{carol.UserID}},
			{"?membership=leave", []string{dave.UserID}},
			{"?not_membership=leave", []string{alice.UserID, bob.UserID, carol.UserID}},
			{"?not_membership=join", []string{carol.UserID, dave.UserID}},
			{"?membership=ban", nil},
		} {
			got := membersOf(tc.query)
			if len(got) != len(tc.want) {
				t.Errorf("/members%s: %v, want %v", tc.query, got, tc.want)
			}
			for _, u := range tc.want {
				if got[u] != all[u] {
					t.Errorf("/members%s: %s is %q, want %q", tc.query, u, got[u], all[u])
				}
			}
		}

		// ?at= is the membership at a pagination token: before dave's leave he was joined; before
		// carol's invite neither she nor dave were there.
		p := getMessages(t, s, alice, roomID, "dir", "b", "limit", "1")
		if got := membersOf("?at=" + url.QueryEscape(p.end)); len(got) != 4 || got[dave.UserID] != "join" || got[carol.UserID] != "invite" {
			t.Errorf("/members at the token before dave's leave: %v", got)
		}
		p = getMessages(t, s, alice, roomID, "dir", "b", "limit", "3")
		if got := membersOf("?at=" + url.QueryEscape(p.end)); len(got) != 2 || got[alice.UserID] != "join" || got[bob.UserID] != "join" {
			t.Errorf("/members at the token before carol's invite: %v", got)
		}
		if got := membersOf("?membership=join&at=" + url.QueryEscape(p.end)); len(got) != 2 {
			t.Errorf("/members?membership=join at the token before carol's invite: %v", got)
		}

		res := s.Do(t, "GET", roomPath(roomID, "/joined_members"), bob.AccessToken, nil)
		want(t, "/joined_members", res, http.StatusOK, "")
		joined := obj(res.JSON["joined"])
		if len(joined) != 2 || obj(joined[alice.UserID])["display_name"] != "Alice L." || obj(joined[bob.UserID])["display_name"] != "bob" {
			t.Fatalf("/joined_members %s", res.Raw)
		}
		// Only members may list joined members of a non-world-readable room.
		want(t, "/joined_members by invitee", s.Do(t, "GET", roomPath(roomID, "/joined_members"), carol.AccessToken, nil), http.StatusForbidden, "M_FORBIDDEN")
		want(t, "/joined_members by ex-member", s.Do(t, "GET", roomPath(roomID, "/joined_members"), dave.AccessToken, nil), http.StatusForbidden, "M_FORBIDDEN")

		rooms := joinedRooms(t, s, alice)
		if len(rooms) != 2 || !rooms[roomID] || !rooms[other] {
			t.Fatalf("alice joined_rooms %v", rooms)
		}
		if rooms := joinedRooms(t, s, bob); len(rooms) != 1 || !rooms[roomID] {
			t.Fatalf("bob joined_rooms %v", rooms)
		}
		if rooms := joinedRooms(t, s, carol); len(rooms) != 0 {
			t.Fatalf("invitee joined_rooms %v", rooms)
		}
		if rooms := joinedRooms(t, s, dave); len(rooms) != 0 {
			t.Fatalf("ex-member joined_rooms %v", rooms)
		}
	})
}

func TestStateAfterLeave(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		carol := s.Register(t, "carol", "carol password")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat", "topic": "before"})
		mustJoin(t, s, bob, roomID)
		bobJoin := stateEventID(t, s, alice, roomID, "m.room.member", bob.UserID)
		want(t, "bob leaves", member(t, s, bob, roomID, "leave", nil), http.StatusOK, "")
		want(t, "new topic", s.Do(t, "PUT", roomPath(roomID, "/state/m.room.topic"), alice.AccessToken, map[string]any{"topic": "after"}), http.StatusOK, "")
		mustJoin(t, s, carol, roomID)

		if got := stateContent(t, s, bob, roomID, "m.room.topic", "")["topic"]; got != "before" {
			t.Fatalf("bob, who left, sees topic %v, want the one at his leave", got)
		}
		if got := stateContent(t, s, alice, roomID, "m.room.topic", "")["topic"]; got != "after" {
			t.Fatalf("alice sees topic %v", got)
		}
		res := s.Do(t, "GET", roomPath(roomID, "/state"), bob.AccessToken, nil)
		want(t, "/state after leave", res, http.StatusOK, "")
		var list []map[string]any
		decodeInto(t, res.Raw, &list)
		var topic, bobMembership string
		for _, e := range list {
			switch {
			case e["type"] == "m.room.topic":
				topic, _ = obj(e["content"])["topic"].(string)
			case e["type"] == "m.room.member" && e["state_key"] == carol.UserID:
				t.Errorf("bob sees carol, who joined after he left")
			case e["type"] == "m.room.member" && e["state_key"] == bob.UserID:
				bobMembership, _ = obj(e["content"])["membership"].(string)
			}
		}
		if topic != "before" || bobMembership != "leave" {
			t.Fatalf("/state after leave: topic %q, bob %q: %s", topic, bobMembership, res.Raw)
		}
		// /members is the state at the leave too.
		res = s.Do(t, "GET", roomPath(roomID, "/members"), bob.AccessToken, nil)
		want(t, "/members after leave", res, http.StatusOK, "")
		for _, e := range events(t, res, "chunk") {
			if e["state_key"] == carol.UserID {
				t.Fatalf("/members after leave lists carol: %s", res.Raw)
			}
		}
		// Nor with ?at= a token from after his leave (alice's pages): that point is hidden from him.
		for _, tok := range []string{getMessages(t, s, alice, roomID, "dir", "b", "limit", "1").start,
			getMessages(t, s, alice, roomID, "dir", "b", "limit", "1").end} {
			res = s.Do(t, "GET", roomPath(roomID, "/members?at="+url.QueryEscape(tok)), bob.AccessToken, nil)
			want(t, "/members?at=<token after his leave>", res, http.StatusForbidden, "M_FORBIDDEN")
		}
		// A token from while he was in the room works.
		var atJoin string
		for from := ""; ; {
			p := getMessages(t, s, bob, roomID, "dir", "b", "limit", "1", "from", from)
			if len(p.ids) == 1 && p.ids[0] == bobJoin {
				atJoin = p.start // the boundary just after his join
				break
			}
			if !p.hasEnd {
				t.Fatal("bob's join not found in his timeline")
			}
			from = p.end
		}
		res = s.Do(t, "GET", roomPath(roomID, "/members?at="+url.QueryEscape(atJoin)), bob.AccessToken, nil)
		want(t, "/members?at=<his join>", res, http.StatusOK, "")
		if got := events(t, res, "chunk"); len(got) != 2 {
			t.Fatalf("/members at bob's join: %s", res.Raw)
		}
		// After rejoining bob sees the current state again.
		mustJoin(t, s, bob, roomID)
		if got := stateContent(t, s, bob, roomID, "m.room.topic", "")["topic"]; got != "after" {
			t.Fatalf("rejoined bob sees topic %v", got)
		}
	})
}
