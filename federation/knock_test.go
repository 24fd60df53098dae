package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/xmatrix"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// knockState runs an initial /sync for u and returns rooms.knock (room ID -> knock_state events)
// and the rooms of rooms.leave.
func knockState(t *testing.T, hs *servertest.Server, u servertest.User) (map[string][]timelineEvent, map[string]bool) {
	t.Helper()
	res := hs.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(`{"room":{"include_leave":true}}`), u.AccessToken, nil)
	if res.Status != 200 {
		t.Fatalf("sync: %d %s", res.Status, res.Raw)
	}
	var body struct {
		Rooms struct {
			Knock map[string]struct {
				KnockState struct {
					Events []timelineEvent `json:"events"`
				} `json:"knock_state"`
			} `json:"knock"`
			Leave map[string]json.RawMessage `json:"leave"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(res.Raw, &body); err != nil {
		t.Fatal(err)
	}
	out, left := map[string][]timelineEvent{}, map[string]bool{}
	for id, r := range body.Rooms.Knock {
		out[id] = r.KnockState.Events
	}
	for id := range body.Rooms.Leave {
		left[id] = true
	}
	return out, left
}

// signedFedDo sends a request to to's federation listener signed by from.
func signedFedDo(t *testing.T, ca *servertest.CA, from, to *servertest.Server, method, uri string, body []byte) servertest.Response {
	t.Helper()
	h, err := xmatrix.Sign(xmatrix.Request{Method: method, URI: uri, Origin: from.Config.ServerName, Destination: to.Config.ServerName,
		Content: body}, from.Key.ID, from.Key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return fedDo(t, ca, to, method, uri, body, h)
}

// TestFederatedKnocks: bob@hs2 knocks on rooms of hs1 (join rule knock): by alias with a reason,
// alice sees the knock, bob's /sync lists the room under rooms.knock with its stripped state,
// alice invites him and he joins; a knock on a v12 room (no server in its ID) through via,
// withdrawn with a leave through make_leave/send_leave; a knock on an invite-only room is
// refused; make_knock's own refusals.
func TestFederatedKnocks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		ca, hs1, hs2, alice, bob := p.ca, p.hs1, p.hs2, p.alice, p.bob
		name1 := hs1.Config.ServerName
		aliceS := newSyncer(hs1, alice)

		create := func(name, version, alias, rule string) string {
			body := map[string]any{"preset": "private_chat", "name": name,
				"initial_state": []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]string{"join_rule": rule}}}}
			if version != "" {
				body["room_version"] = version
			}
			if alias != "" {
				body["room_alias_name"] = alias
			}
			return createRoom(t, hs1, alice, body)
		}
		knockRoom := create("Knock here", "", "knockers", "knock")
		v12Room := create("Version 12", "12", "", "knock")
		inviteOnly := create("Invite only", "", "", "invite")

		// bob knocks by alias: resolved with hs1's /query/directory, make_knock, send_knock.
		res := hs2.Do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape("#knockers:"+name1), bob.AccessToken,
			map[string]any{"reason": "let me in"})
		if res.Status != 200 || res.Str("room_id") != knockRoom {
			t.Fatalf("knock by alias: %d %s", res.Status, res.Raw)
		}
		aliceS.waitFor(t, knockRoom, "bob's knock", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "knock") })
		for _, e := range aliceS.rooms[knockRoom] {
			if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == bob.UserID {
				var c struct{ Reason string }
				if json.Unmarshal(e.Content, &c) != nil || c.Reason != "let me in" {
					t.Errorf("bob's knock as alice sees it: %s", e.Content)
				}
			}
		}
		knocks, _ := knockState(t, hs2, bob)
		state, ok := knocks[knockRoom]
		if !ok {
			t.Fatalf("bob's sync has no rooms.knock for the room: %v", knocks)
		}
		var named, knockRule, create0 bool
		for _, e := range state {
			switch e.Type {
			case "m.room.name":
				named = string(e.Content) == `{"name":"Knock here"}`
			case "m.room.join_rules":
				knockRule = string(e.Content) == `{"join_rule":"knock"}`
			case "m.room.create":
				create0 = true
			}
		}
		if !named || !knockRule || !create0 || !hasMember(state, bob.UserID, "knock") {
			t.Errorf("knock_state: %s", describeState(state))
		}

		// alice accepts the knock with an invite; bob joins.
		if res := hs1.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(knockRoom)+"/invite", alice.AccessToken,
			map[string]any{"user_id": bob.UserID}); res.Status != 200 {
			t.Fatalf("invite after knock: %d %s", res.Status, res.Raw)
		}
		bobS := newSyncer(hs2, bob)
		deadline := time.Now().Add(20 * time.Second)
		for !hasMember(bobS.invites[knockRoom], bob.UserID, "invite") {
			if time.Now().After(deadline) {
				t.Fatalf("bob's invite after the knock: %s", describeState(bobS.invites[knockRoom]))
			}
			bobS.once(t, 500)
		}
		if knocks, _ := knockState(t, hs2, bob); knocks[knockRoom] != nil {
			t.Errorf("the accepted knock is still listed in rooms.knock")
		}
		if res := hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(knockRoom), bob.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("join after invite: %d %s", res.Status, res.Raw)
		}
		aliceS.waitFor(t, knockRoom, "bob's join", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "join") })

		// A v12 room ID names no server: via says where to knock; the leave that withdraws the
		// knock finds hs1 from the knock's stripped state.
		res = hs2.Do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(v12Room)+"?via="+url.QueryEscape(name1), bob.AccessToken, map[string]any{})
		if res.Status != 200 {
			t.Fatalf("knock on the v12 room: %d %s", res.Status, res.Raw)
		}
		aliceS.waitFor(t, v12Room, "bob's knock", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "knock") })
		if knocks, _ := knockState(t, hs2, bob); knocks[v12Room] == nil {
			t.Fatalf("bob's sync has no rooms.knock for the v12 room")
		}
		if res := hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(v12Room)+"/leave", bob.AccessToken,
			map[string]any{"reason": "never mind"}); res.Status != 200 {
			t.Fatalf("withdraw the knock: %d %s", res.Status, res.Raw)
		}
		aliceS.waitFor(t, v12Room, "bob's withdrawal", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "leave") })
		knocks, left := knockState(t, hs2, bob)
		if knocks[v12Room] != nil || !left[v12Room] {
			t.Errorf("after the withdrawal bob's sync lists the room in knock %v, in leave %v", knocks[v12Room] != nil, left[v12Room])
		}

		// Refusals passed through to the client.
		for _, c := range []struct {
			name, target, query string
			status              int
			errcode             string
		}{
			{"invite-only room", inviteOnly, "", 403, "M_FORBIDDEN"},
			{"unknown room", "!nope:" + name1, "", 404, "M_NOT_FOUND"},
			{"unknown remote alias", "#nope:" + name1, "", 404, "M_NOT_FOUND"},
			{"not an ID", "nope", "", 400, "M_INVALID_PARAM"},
		} {
			res := hs2.Do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(c.target)+c.query, bob.AccessToken, map[string]any{})
			if res.Status != c.status || res.Errcode() != c.errcode {
				t.Errorf("knock, %s: %d %s", c.name, res.Status, res.Raw)
			}
		}

		// make_knock as the resident refuses.
		carol := "@carol:" + hs2.Config.ServerName
		makeKnock := func(roomID, user, query string) servertest.Response {
			return signedFedDo(t, ca, hs2, hs1, "GET", "/_matrix/federation/v1/make_knock/"+url.PathEscape(roomID)+"/"+url.PathEscape(user)+query, nil)
		}
		if r := makeKnock(knockRoom, carol, "?ver=1&ver=6"); r.Status != 400 || r.Errcode() != "M_INCOMPATIBLE_ROOM_VERSION" || r.Str("room_version") == "" {
			t.Errorf("make_knock, version not offered: %d %s", r.Status, r.Raw)
		}
		if r := makeKnock(knockRoom, carol, ""); r.Status != 400 || r.Errcode() != "M_MISSING_PARAM" {
			t.Errorf("make_knock without ver: %d %s", r.Status, r.Raw)
		}
		if r := makeKnock(knockRoom, "@dave:"+name1, "?ver=10&ver=11&ver=12"); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("make_knock for a user of another server: %d %s", r.Status, r.Raw)
		}
		if r := makeKnock(inviteOnly, carol, "?ver=10&ver=11&ver=12"); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("make_knock, invite-only room: %d %s", r.Status, r.Raw)
		}
		if r := makeKnock(knockRoom, bob.UserID, "?ver=10&ver=11&ver=12"); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("make_knock for a joined member: %d %s", r.Status, r.Raw)
		}
		r := makeKnock(knockRoom, carol, "?ver=10&ver=11&ver=12")
		ev, _ := r.JSON["event"].(map[string]any)
		if r.Status != 200 || ev["state_key"] != carol || fmt.Sprint(ev["content"]) != "map[membership:knock]" {
			t.Fatalf("make_knock template: %d %s", r.Status, r.Raw)
		}

		// send_knock checks the event as send_join does; a valid knock is answered with the
		// room's stripped state, full events.
		v, err := event.LookupVersion(r.Str("room_version"))
		if err != nil {
			t.Fatal(err)
		}
		var tmpl struct {
			PrevEvents []string `json:"prev_events"`
			AuthEvents []string `json:"auth_events"`
			Depth      int64    `json:"depth"`
		}
		raw, _ := json.Marshal(ev)
		_ = json.Unmarshal(raw, &tmpl)
		build := func(membership string) *event.PDU {
			p, err := event.Build(v, event.Proto{RoomID: knockRoom, Sender: carol, Type: "m.room.member", StateKey: &carol,
				Content: json.RawMessage(`{"membership":"` + membership + `"}`), PrevEvents: tmpl.PrevEvents, AuthEvents: tmpl.AuthEvents,
				Depth: tmpl.Depth, OriginServerTS: time.Now().UnixMilli()}, hs2.Config.ServerName, hs2.Key.ID, hs2.Key.Private)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		sendKnock := func(eventID string, p *event.PDU) servertest.Response {
			return signedFedDo(t, ca, hs2, hs1, "PUT", "/_matrix/federation/v1/send_knock/"+url.PathEscape(knockRoom)+"/"+url.PathEscape(eventID), p.Raw)
		}
		join := build("join")
		if r := sendKnock(join.EventID, join); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("send_knock of a join: %d %s", r.Status, r.Raw)
		}
		knock := build("knock")
		if r := sendKnock(join.EventID, knock); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("send_knock under another event ID: %d %s", r.Status, r.Raw)
		}
		r = sendKnock(knock.EventID, knock)
		var answer struct {
			KnockRoomState []json.RawMessage `json:"knock_room_state"`
		}
		if r.Status != 200 || json.Unmarshal(r.Raw, &answer) != nil {
			t.Fatalf("send_knock: %d %s", r.Status, r.Raw)
		}
		types := map[string]bool{}
		for _, raw := range answer.KnockRoomState {
			p, err := event.Parse(v, raw)
			if err != nil {
				t.Fatalf("knock_room_state entry: %v", err)
			}
			if err := event.VerifyEventSignedBy(context.Background(), v, p, name1, func(context.Context, string, string, int64) (ed25519.PublicKey, error) {
				return hs1.Key.Public(), nil
			}); err != nil {
				t.Errorf("knock_room_state %s is not signed by hs1: %v", p.Type, err)
			}
			types[p.Type] = true
		}
		if !types["m.room.create"] || !types["m.room.join_rules"] || !types["m.room.name"] {
			t.Errorf("knock_room_state has %v", types)
		}
		aliceS.waitFor(t, knockRoom, "carol's knock", func(evs []timelineEvent) bool { return hasMember(evs, carol, "knock") })
	})
}

func describeState(evs []timelineEvent) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("\n  %s %v %s", e.Type, e.StateKey, e.Content)
	}
	return s
}
