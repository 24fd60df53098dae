package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// The room directory, spaces, profiles and timestamp_to_event across two servers: hs1 serves
// them over federation, bob@hs2 reads them through his own server's client API.

type directoryRooms struct {
	Chunk []struct {
		RoomID           string `json:"room_id"`
		Name             string `json:"name"`
		Topic            string `json:"topic"`
		NumJoinedMembers int    `json:"num_joined_members"`
	} `json:"chunk"`
	NextBatch string `json:"next_batch"`
	Total     int    `json:"total_room_count_estimate"`
}

func dirDecode[T any](t *testing.T, res servertest.Response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(res.Raw, &v); err != nil {
		t.Fatalf("decode %s: %v", res.Raw, err)
	}
	return v
}

func TestFederatedPublicRooms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		name1 := hs1.Config.ServerName
		garden := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Gardening", "topic": "Roses and tulips"})
		chess := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Chess club", "topic": "Openings"})
		createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "Unlisted"}) // not published

		dir := "/_matrix/client/v3/publicRooms?server=" + url.QueryEscape(name1)
		res := hs2.Do(t, "GET", dir, bob.AccessToken, nil)
		if res.Status != 200 {
			t.Fatalf("publicRooms of hs1 through hs2: %d %s", res.Status, res.Raw)
		}
		all := dirDecode[directoryRooms](t, res)
		if len(all.Chunk) != 2 || all.Total != 2 {
			t.Fatalf("hs1's directory seen from hs2: %s", res.Raw)
		}
		byID := map[string]int{}
		for i, r := range all.Chunk {
			byID[r.RoomID] = i
			if r.NumJoinedMembers != 1 {
				t.Errorf("%s: num_joined_members %d, want 1", r.RoomID, r.NumJoinedMembers)
			}
		}
		if g, ok := byID[garden]; !ok || all.Chunk[g].Name != "Gardening" || all.Chunk[g].Topic != "Roses and tulips" {
			t.Errorf("gardening room missing or wrong: %s", res.Raw)
		}
		if c, ok := byID[chess]; !ok || all.Chunk[c].Name != "Chess club" || all.Chunk[c].Topic != "Openings" {
			t.Errorf("chess room missing or wrong: %s", res.Raw)
		}

		// One at a time: the next_batch token of hs1 pages through hs2.
		first := dirDecode[directoryRooms](t, hs2.Do(t, "GET", dir+"&limit=1", bob.AccessToken, nil))
		if len(first.Chunk) != 1 || first.NextBatch == "" {
			t.Fatalf("limit=1: %+v", first)
		}
		second := dirDecode[directoryRooms](t, hs2.Do(t, "GET", dir+"&limit=1&since="+url.QueryEscape(first.NextBatch), bob.AccessToken, nil))
		if len(second.Chunk) != 1 || second.NextBatch != "" || second.Chunk[0].RoomID == first.Chunk[0].RoomID {
			t.Fatalf("second page: %+v after %+v", second, first)
		}
		// POST with a filter: only the matching room.
		res = hs2.Do(t, "POST", dir, bob.AccessToken, map[string]any{"filter": map[string]any{"generic_search_term": "CHESS"}})
		if got := dirDecode[directoryRooms](t, res); res.Status != 200 || len(got.Chunk) != 1 || got.Chunk[0].RoomID != chess {
			t.Fatalf("filtered by chess: %d %s", res.Status, res.Raw)
		}
		res = hs2.Do(t, "POST", dir, bob.AccessToken, map[string]any{"limit": 1, "filter": map[string]any{"room_types": []any{"m.space"}}})
		if got := dirDecode[directoryRooms](t, res); res.Status != 200 || len(got.Chunk) != 0 {
			t.Fatalf("filtered by m.space: %d %s", res.Status, res.Raw)
		}

		// Errors: a bad token from hs1 passes through; no token, a bad server name, and a
		// server nobody answers for.
		if res := hs2.Do(t, "GET", dir+"&since=garbage", bob.AccessToken, nil); res.Status != 400 || res.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("bad since token: %d %s", res.Status, res.Raw)
		}
		if res := hs2.Do(t, "GET", dir, "", nil); res.Status != 401 || res.Errcode() != "M_MISSING_TOKEN" {
			t.Errorf("another server's directory without logging in: %d %s", res.Status, res.Raw)
		}
		if res := hs2.Do(t, "GET", "/_matrix/client/v3/publicRooms?server=bad%20name", bob.AccessToken, nil); res.Status != 400 || res.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("invalid server name: %d %s", res.Status, res.Raw)
		}
		if res := hs2.Do(t, "GET", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape(ip3+":1"), bob.AccessToken, nil); res.Status != 502 {
			t.Errorf("unreachable server: %d %s", res.Status, res.Raw)
		}
		// hs2's own directory is still its own (empty).
		if res := hs2.Do(t, "GET", "/_matrix/client/v3/publicRooms", "", nil); res.Status != 200 || len(dirDecode[directoryRooms](t, res).Chunk) != 0 {
			t.Errorf("hs2's own directory: %d %s", res.Status, res.Raw)
		}
	})
}

type hierarchyPage struct {
	Rooms []struct {
		RoomID        string            `json:"room_id"`
		Name          string            `json:"name"`
		RoomType      string            `json:"room_type"`
		JoinRule      string            `json:"join_rule"`
		ChildrenState []json.RawMessage `json:"children_state"`
	} `json:"rooms"`
	NextBatch string `json:"next_batch"`
}

func (p hierarchyPage) ids() []string {
	var out []string
	for _, r := range p.Rooms {
		out = append(out, r.RoomID)
	}
	return out
}

func TestFederatedHierarchy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		p := newFedPair(t, backend)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		name1 := hs1.Config.ServerName

		space := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "Our space", "creation_content": map[string]any{"type": "m.space"}})
		sub := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "Sub space", "creation_content": map[string]any{"type": "m.space"}})
		one := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "Public one"})
		two := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "Public two"})
		secret := createRoom(t, hs1, alice, map[string]any{"preset": "private_chat", "name": "Secret"})
		deep := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "Deep"})
		addChild := func(parent, child, order string, suggested bool) {
			t.Helper()
			res := hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(parent)+"/state/m.space.child/"+url.PathEscape(child), alice.AccessToken,
				map[string]any{"via": []string{name1}, "order": order, "suggested": suggested})
			if res.Status != 200 {
				t.Fatalf("m.space.child: %d %s", res.Status, res.Raw)
			}
		}
		addChild(space, one, "a", true)
		addChild(space, secret, "b", false)
		addChild(space, two, "c", false)
		addChild(space, sub, "d", false)
		addChild(sub, deep, "a", false)

		// The federation endpoint: the space, its children hs2 could join, the secret one named
		// inaccessible.
		var fed struct {
			Room struct {
				RoomID        string            `json:"room_id"`
				RoomType      string            `json:"room_type"`
				ChildrenState []json.RawMessage `json:"children_state"`
			} `json:"room"`
			Children []struct {
				RoomID string `json:"room_id"`
				Name   string `json:"name"`
			} `json:"children"`
			Inaccessible []string `json:"inaccessible_children"`
		}
		if err := hs2.Federation.Client().DoJSON(ctx, name1, "GET", "/_matrix/federation/v1/hierarchy/"+url.PathEscape(space), nil, &fed); err != nil {
			t.Fatal(err)
		}
		var fedChildren []string
		for _, c := range fed.Children {
			fedChildren = append(fedChildren, c.RoomID)
		}
		slices.Sort(fedChildren)
		want := []string{one, two, sub}
		slices.Sort(want)
		if fed.Room.RoomID != space || fed.Room.RoomType != "m.space" || len(fed.Room.ChildrenState) != 4 ||
			!slices.Equal(fedChildren, want) || !slices.Equal(fed.Inaccessible, []string{secret}) {
			t.Fatalf("federated hierarchy: %+v", fed)
		}
		// The secret room itself is not found for hs2; nor is a room hs1 does not know.
		for _, id := range []string{secret, "!unknown:" + name1} {
			_, err := hs2.Federation.Client().Do(ctx, name1, "GET", "/_matrix/federation/v1/hierarchy/"+url.PathEscape(id), nil)
			if !isFedError(err, 404, "M_NOT_FOUND") {
				t.Errorf("federated hierarchy of %s: %v", id, err)
			}
		}

		// bob, on hs2 which knows none of these rooms, walks the space through hs1.
		path := "/_matrix/client/v1/rooms/" + url.PathEscape(space) + "/hierarchy?via=" + url.QueryEscape(name1)
		res := hs2.Do(t, "GET", path, bob.AccessToken, nil)
		if res.Status != 200 {
			t.Fatalf("hierarchy through hs2: %d %s", res.Status, res.Raw)
		}
		page := dirDecode[hierarchyPage](t, res)
		if got, want := page.ids(), []string{space, one, two, sub, deep}; !slices.Equal(got, want) {
			t.Fatalf("hierarchy rooms %v, want %v (space, one, two, sub, deep); %s", got, want, res.Raw)
		}
		if page.Rooms[0].Name != "Our space" || page.Rooms[0].RoomType != "m.space" || len(page.Rooms[0].ChildrenState) != 4 ||
			page.Rooms[1].Name != "Public one" || page.Rooms[4].Name != "Deep" {
			t.Errorf("hierarchy details: %s", res.Raw)
		}
		// Pages of two, suggested only, and a depth limit.
		p1 := dirDecode[hierarchyPage](t, hs2.Do(t, "GET", path+"&limit=2", bob.AccessToken, nil))
		p2 := dirDecode[hierarchyPage](t, hs2.Do(t, "GET", path+"&limit=2&from="+url.QueryEscape(p1.NextBatch), bob.AccessToken, nil))
		if !slices.Equal(p1.ids(), []string{space, one}) || !slices.Equal(p2.ids(), []string{two, sub}) || p2.NextBatch == "" {
			t.Errorf("pages %v then %v", p1.ids(), p2.ids())
		}
		if got := dirDecode[hierarchyPage](t, hs2.Do(t, "GET", path+"&suggested_only=true", bob.AccessToken, nil)).ids(); !slices.Equal(got, []string{space, one}) {
			t.Errorf("suggested only: %v", got)
		}
		if got := dirDecode[hierarchyPage](t, hs2.Do(t, "GET", path+"&max_depth=1", bob.AccessToken, nil)).ids(); !slices.Equal(got, []string{space, one, two, sub}) {
			t.Errorf("max_depth=1: %v", got)
		}
		// A room no server can tell about.
		res = hs2.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape("!unknown:"+name1)+"/hierarchy", bob.AccessToken, nil)
		if res.Status != 403 || res.Errcode() != "M_FORBIDDEN" {
			t.Errorf("unknown room: %d %s", res.Status, res.Raw)
		}
		// Once bob joined the space, hs2 knows it but not its children: they still come from hs1.
		joinVia(t, hs2, bob, space, name1)
		res = hs2.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(space)+"/hierarchy", bob.AccessToken, nil)
		if got := dirDecode[hierarchyPage](t, res).ids(); !slices.Equal(got, []string{space, one, two, sub, deep}) {
			t.Errorf("hierarchy of a joined space: %d %v", res.Status, got)
		}
	})
}

func TestFederatedProfile(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		name1 := hs1.Config.ServerName
		carol := hs1.Register(t, "carol", "carol-password-1")
		for key, value := range map[string]string{"displayname": "Alice Liddell", "avatar_url": "mxc://" + name1 + "/rabbit"} {
			if res := hs1.Do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID)+"/"+key, alice.AccessToken, map[string]any{key: value}); res.Status != 200 {
				t.Fatalf("set %s: %d %s", key, res.Status, res.Raw)
			}
		}
		if res := hs1.Do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(carol.UserID)+"/displayname", carol.AccessToken, map[string]any{"displayname": "Carol"}); res.Status != 200 {
			t.Fatalf("set carol's name: %d %s", res.Status, res.Raw)
		}

		profile := "/_matrix/client/v3/profile/" + url.PathEscape(alice.UserID)
		res := hs2.Do(t, "GET", profile, bob.AccessToken, nil)
		if res.Status != 200 || res.Str("displayname") != "Alice Liddell" || res.Str("avatar_url") != "mxc://"+name1+"/rabbit" {
			t.Fatalf("alice's profile through hs2: %d %s", res.Status, res.Raw)
		}
		res = hs2.Do(t, "GET", profile+"/displayname", "", nil)
		if res.Status != 200 || res.Str("displayname") != "Alice Liddell" || len(res.JSON) != 1 {
			t.Fatalf("alice's displayname through hs2: %d %s", res.Status, res.Raw)
		}
		res = hs2.Do(t, "GET", profile+"/avatar_url", bob.AccessToken, nil)
		if res.Status != 200 || res.Str("avatar_url") != "mxc://"+name1+"/rabbit" || len(res.JSON) != 1 {
			t.Fatalf("alice's avatar through hs2: %d %s", res.Status, res.Raw)
		}
		for _, p := range []string{
			"/_matrix/client/v3/profile/" + url.PathEscape("@nobody:"+name1),
			"/_matrix/client/v3/profile/" + url.PathEscape("@nobody:"+name1) + "/displayname",
			"/_matrix/client/v3/profile/" + url.PathEscape(carol.UserID) + "/avatar_url", // carol has none
		} {
			if res := hs2.Do(t, "GET", p, bob.AccessToken, nil); res.Status != 404 || res.Errcode() != "M_NOT_FOUND" {
				t.Errorf("GET %s: %d %s, want 404 M_NOT_FOUND", p, res.Status, res.Raw)
			}
		}
		if res := hs2.Do(t, "GET", profile+"/Bad.Key", bob.AccessToken, nil); res.Status != 400 || res.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("invalid key: %d %s", res.Status, res.Raw)
		}
		if res := hs2.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape("@x:"+ip3+":1"), bob.AccessToken, nil); res.Status != 502 {
			t.Errorf("user of an unreachable server: %d %s", res.Status, res.Raw)
		}
	})
}

// dirEventTS reads an event's origin_server_ts through the client API.
func dirEventTS(t *testing.T, hs *servertest.Server, u servertest.User, roomID, eventID string) int64 {
	t.Helper()
	res := hs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(eventID), u.AccessToken, nil)
	ts, ok := res.JSON["origin_server_ts"].(float64)
	if res.Status != 200 || !ok {
		t.Fatalf("event %s: %d %s", eventID, res.Status, res.Raw)
	}
	return int64(ts)
}

// dirSendSpaced sends a message and waits until the clock has moved past its timestamp, so that the
// next event gets a later one.
func dirSendSpaced(t *testing.T, hs *servertest.Server, u servertest.User, roomID, body string) (string, int64) {
	t.Helper()
	id := sendText(t, hs, u, roomID, body)
	ts := dirEventTS(t, hs, u, roomID, id)
	waitClockPast(t, ts)
	return id, ts
}

// waitClockPast returns once the clock (in milliseconds) is past ts.
func waitClockPast(t *testing.T, ts int64) {
	t.Helper()
	servertest.Eventually(t, time.Second, func() error {
		if time.Now().UnixMilli() <= ts {
			return fmt.Errorf("clock still at %d", ts)
		}
		return nil
	})
}

func TestFederatedTimestampToEvent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		p := newFedPair(t, backend, fastRetry)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		name1 := hs1.Config.ServerName
		roomID := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "History"})
		// m1 must come after the room's creation events in time: hs2 gets those with its join,
		// and one of them in m1's millisecond would be an answer as close as m1 (and hs2's own).
		waitClockPast(t, time.Now().UnixMilli())
		m1, ts1 := dirSendSpaced(t, hs1, alice, roomID, "one")
		m2, ts2 := dirSendSpaced(t, hs1, alice, roomID, "two")
		m3, ts3 := dirSendSpaced(t, hs1, alice, roomID, "three")

		fedPath := func(ts int64, dir string) string {
			return fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=%s", url.PathEscape(roomID), ts, dir)
		}
		type answer struct {
			EventID        string `json:"event_id"`
			OriginServerTS int64  `json:"origin_server_ts"`
		}
		ask := func(ts int64, dir string) (answer, error) {
			var a answer
			err := hs2.Federation.Client().DoJSON(ctx, name1, "GET", fedPath(ts, dir), nil, &a)
			return a, err
		}
		// hs2 has no member yet and the history is shared: nothing for it.
		if _, err := ask(ts2, "f"); !isFedError(err, 404, "M_NOT_FOUND") {
			t.Fatalf("timestamp_to_event before hs2 is in the room: %v", err)
		}

		// bob joins: hs2 starts its copy of the room at his join.
		joinVia(t, hs2, bob, roomID, name1)
		for _, c := range []struct {
			ts   int64
			dir  string
			want string
			at   int64
		}{{ts2, "f", m2, ts2}, {ts2, "b", m2, ts2}, {ts2 + 1, "f", m3, ts3}, {ts2 - 1, "b", m1, ts1}} {
			got, err := ask(c.ts, c.dir)
			if err != nil || got.EventID != c.want || got.OriginServerTS != c.at {
				t.Errorf("federated timestamp_to_event ts=%d dir=%s: %+v, %v; want %s at %d", c.ts, c.dir, got, err, c.want, c.at)
			}
		}
		if _, err := ask(1, "b"); !isFedError(err, 404, "M_NOT_FOUND") {
			t.Errorf("nothing before the room: %v", err)
		}
		if _, err := hs2.Federation.Client().Do(ctx, name1, "GET", "/_matrix/federation/v1/timestamp_to_event/"+url.PathEscape(roomID)+"?ts=1&dir=x", nil); !isFedError(err, 400, "M_INVALID_PARAM") {
			t.Errorf("dir=x: %v", err)
		}

		// bob asks his own server, which has nothing before his join: hs1 is asked and its
		// closer event wins.
		client := func(ts int64, dir string) servertest.Response {
			return hs2.Do(t, "GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?ts=%d&dir=%s", url.PathEscape(roomID), ts, dir), bob.AccessToken, nil)
		}
		if res := client(ts1, "f"); res.Status != 200 || res.Str("event_id") != m1 {
			t.Errorf("bob's timestamp_to_event forward from m1: %d %s, want %s", res.Status, res.Raw, m1)
		}
		if res := client(ts3, "b"); res.Status != 200 || res.Str("event_id") != m3 {
			t.Errorf("bob's timestamp_to_event backward from m3: %d %s, want %s", res.Status, res.Raw, m3)
		}
	})
}

// TestDirectoryEndpointsAreSigned: the new endpoints refuse unsigned requests.
func TestDirectoryEndpointsAreSigned(t *testing.T) {
	ca := servertest.NewCA(t)
	hs := servertest.Start(t, "sqlite", servertest.Federated(t, ca, ip1))
	for _, c := range []struct{ method, path string }{
		{"GET", "/_matrix/federation/v1/publicRooms"},
		{"POST", "/_matrix/federation/v1/publicRooms"},
		{"GET", "/_matrix/federation/v1/hierarchy/" + url.PathEscape("!a:b")},
		{"GET", "/_matrix/federation/v1/timestamp_to_event/" + url.PathEscape("!a:b") + "?ts=1&dir=f"},
	} {
		var body []byte
		if c.method == "POST" {
			body = []byte(`{}`)
		}
		if res := fedDo(t, ca, hs, c.method, c.path, body, ""); res.Status != 401 || res.Errcode() != "M_UNAUTHORIZED" {
			t.Errorf("unsigned %s %s: %d %s", c.method, c.path, res.Status, res.Raw)
		}
	}
}
