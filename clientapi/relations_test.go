package clientapi_test

import (
	"fmt"
	"net/url"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

func createRoom(t *testing.T, s *servertest.Server, u servertest.User, body map[string]any) string {
	t.Helper()
	res := s.Do(t, "POST", "/_matrix/client/v3/createRoom", u.AccessToken, body)
	if res.Status != 200 {
		t.Fatalf("createRoom: %d %s", res.Status, res.Raw)
	}
	return res.Str("room_id")
}

func send(t *testing.T, s *servertest.Server, u servertest.User, roomID, txn string, content map[string]any) string {
	t.Helper()
	res := s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn, u.AccessToken, content)
	if res.Status != 200 {
		t.Fatalf("send: %d %s", res.Status, res.Raw)
	}
	return res.Str("event_id")
}

func chunkIDs(res servertest.Response) []string {
	var ids []string
	chunk, _ := res.JSON["chunk"].([]any)
	for _, e := range chunk {
		ids = append(ids, e.(map[string]any)["event_id"].(string))
	}
	return ids
}

// TestRelationsAndThreads covers edits, reactions and a thread: /relations by type, paging,
// /threads, and the bundled aggregations on the root.
func TestRelationsAndThreads(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		roomID := createRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		if res := s.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), bob.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("join: %d %s", res.Status, res.Raw)
		}
		root := send(t, s, alice, roomID, "root", map[string]any{"msgtype": "m.text", "body": "root"})
		edit := send(t, s, alice, roomID, "edit", map[string]any{"msgtype": "m.text", "body": "* fixed",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "fixed"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": root}})
		// bob's "edit" of alice's message must not count as the latest edit.
		send(t, s, bob, roomID, "fake", map[string]any{"msgtype": "m.text", "body": "* hacked",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "hacked"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": root}})
		for i, u := range []servertest.User{alice, bob} {
			res := s.Do(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.reaction/r%d", url.PathEscape(roomID), i), u.AccessToken,
				map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
			if res.Status != 200 {
				t.Fatal(res.Status, string(res.Raw))
			}
		}
		var replies []string
		for i := 0; i < 3; i++ {
			u := []servertest.User{alice, bob}[i%2]
			replies = append(replies, send(t, s, u, roomID, fmt.Sprintf("th%d", i), map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("reply %d", i),
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}))
		}
		base := "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + "/relations/" + url.PathEscape(root)
		if ids := chunkIDs(s.Do(t, "GET", base, bob.AccessToken, nil)); len(ids) != 7 {
			t.Fatalf("all relations: %d, want 7 (2 edits, 2 reactions, 3 replies)", len(ids))
		}
		if ids := chunkIDs(s.Do(t, "GET", base+"/m.annotation/m.reaction", bob.AccessToken, nil)); len(ids) != 2 {
			t.Fatalf("reactions: %v", ids)
		}
		ids := chunkIDs(s.Do(t, "GET", base+"/m.thread", bob.AccessToken, nil))
		if len(ids) != 3 || ids[0] != replies[2] || ids[2] != replies[0] {
			t.Fatalf("thread replies newest first: %v vs %v", ids, replies)
		}
		// Paging one at a time returns each reply once.
		var paged []string
		from := ""
		for i := 0; i < 10; i++ {
			res := s.Do(t, "GET", base+"/m.thread?limit=1&dir=f"+from, bob.AccessToken, nil)
			paged = append(paged, chunkIDs(res)...)
			next := res.Str("next_batch")
			if next == "" {
				break
			}
			from = "&from=" + next
		}
		if fmt.Sprint(paged) != fmt.Sprint(replies) {
			t.Fatalf("forward paging: %v, want %v", paged, replies)
		}

		res := s.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root), bob.AccessToken, nil)
		rels, _ := res.JSON["unsigned"].(map[string]any)["m.relations"].(map[string]any)
		th, _ := rels["m.thread"].(map[string]any)
		if th["count"] != float64(3) || th["latest_event"].(map[string]any)["event_id"] != replies[2] || th["current_user_participated"] != true {
			t.Fatalf("thread summary: %s", res.Raw)
		}
		if rep, _ := rels["m.replace"].(map[string]any); rep["event_id"] != edit {
			t.Fatalf("latest edit must be alice's own: %s", res.Raw)
		}

		res = s.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/threads", bob.AccessToken, nil)
		if ids := chunkIDs(res); len(ids) != 1 || ids[0] != root {
			t.Fatalf("threads: %s", res.Raw)
		}
		carol := s.Register(t, "carol", "carol password")
		s.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), carol.AccessToken, map[string]any{})
		if ids := chunkIDs(s.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/threads?include=participated", carol.AccessToken, nil)); len(ids) != 0 {
			t.Fatalf("carol participated in no thread: %v", ids)
		}
		expect(t, s.Do(t, "GET", base[:len(base)-len(url.PathEscape(root))]+"$unknown", bob.AccessToken, nil), 404, "M_NOT_FOUND")
		stranger := s.Register(t, "dave", "dave password")
		expect(t, s.Do(t, "GET", base, stranger.AccessToken, nil), 403, "M_FORBIDDEN")
		expect(t, s.Do(t, "GET", base+"?dir=x", bob.AccessToken, nil), 400, "M_INVALID_PARAM")
	})
}

// TestSendRules covers the per-path scope of transaction IDs, the redact power rule, duplicate
// annotations and threads rooted at relations.
func TestSendRules(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		r1 := createRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		r2 := createRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		s.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(r1), bob.AccessToken, map[string]any{})
		a := send(t, s, alice, r1, "t1", map[string]any{"body": "one"})
		if b := send(t, s, alice, r2, "t1", map[string]any{"body": "two"}); b == a {
			t.Fatal("the same txn ID in another room returned the first room's event")
		}
		res := s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/send/m.other/t1", alice.AccessToken, map[string]any{"body": "x"})
		if res.Str("event_id") == a || res.Status != 200 {
			t.Fatalf("the same txn ID for another event type: %s", res.Raw)
		}
		if again := send(t, s, alice, r1, "t1", map[string]any{"body": "one"}); again != a {
			t.Fatalf("retry: %s != %s", again, a)
		}
		// bob (power 0) may not redact alice's message; he may redact his own.
		expect(t, s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/redact/"+url.PathEscape(a)+"/x", bob.AccessToken, map[string]any{}), 403, "M_FORBIDDEN")
		res = s.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/event/"+url.PathEscape(a), alice.AccessToken, nil)
		if c, _ := res.JSON["content"].(map[string]any); c["body"] != "one" {
			t.Fatalf("refused redaction changed the event: %s", res.Raw)
		}
		own := send(t, s, bob, r1, "b1", map[string]any{"body": "mine"})
		expect(t, s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/redact/"+url.PathEscape(own)+"/x", bob.AccessToken, map[string]any{}), 200, "")
		// Duplicate annotation.
		react := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": a, "key": "👍"}}
		expect(t, s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/send/m.reaction/r1", bob.AccessToken, react), 200, "")
		expect(t, s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/send/m.reaction/r2", bob.AccessToken, react), 400, "M_DUPLICATE_ANNOTATION")
		expect(t, s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/send/m.reaction/r3", alice.AccessToken, react), 200, "")
		// A thread rooted at an edit is refused.
		edit := send(t, s, alice, r1, "e1", map[string]any{"body": "* one", "m.new_content": map[string]any{"body": "one!"},
			"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": a}})
		expect(t, s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/send/m.room.message/th", bob.AccessToken,
			map[string]any{"body": "x", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": edit}}), 400, "M_UNKNOWN")
	})
}

// TestOversizeEvent checks that an event over the spec's 65536-byte limit is refused with
// M_TOO_LARGE and nothing is stored.
func TestOversizeEvent(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	alice := s.Register(t, "alice", "alice password")
	roomID := createRoom(t, s, alice, map[string]any{})
	big := make([]byte, 70000)
	for i := range big {
		big[i] = 'x'
	}
	expect(t, s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/big", alice.AccessToken,
		map[string]any{"body": string(big)}), 413, "M_TOO_LARGE")
	res := s.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=100", alice.AccessToken, nil)
	for _, e := range res.JSON["chunk"].([]any) {
		if e.(map[string]any)["type"] == "m.room.message" {
			t.Fatal("the oversize event was stored")
		}
	}
}
