package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// accountDataEvents is a sync response's account_data section (global or a room's).
type accountDataEvents struct {
	Events []struct {
		Type    string          `json:"type"`
		Content json.RawMessage `json:"content"`
	} `json:"events"`
}

// roomAccountData returns the content of the room account data entry typ in a sync response's
// joined room, nil when it is not there.
func roomAccountData(t *testing.T, raw []byte, roomID, typ string) json.RawMessage {
	t.Helper()
	var body struct {
		Rooms struct {
			Join map[string]struct {
				AccountData accountDataEvents `json:"account_data"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("sync response: %v", err)
	}
	for _, e := range body.Rooms.Join[roomID].AccountData.Events {
		if e.Type == typ {
			return e.Content
		}
	}
	return nil
}

// TestRoomTags: tags are added, replaced and removed one by one, kept per user and room, read
// back with GET .../tags and delivered by /sync as the room's m.tag account data; a removal of a
// tag the room does not have changes nothing; bad input gets the spec's errors.
func TestRoomTags(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		roomID := s.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{}).Str("room_id")
		if roomID == "" {
			t.Fatal("no room")
		}
		tags := "/_matrix/client/v3/user/" + alice.UserID + "/rooms/" + url.PathEscape(roomID) + "/tags"
		requireJSON(t, s.Do(t, "GET", tags, alice.AccessToken, nil), `{"tags":{}}`)
		start := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil).Str("next_batch")

		requireJSON(t, s.Do(t, "PUT", tags+"/m.favourite", alice.AccessToken, `{"order":0.25}`), `{}`)
		requireJSON(t, s.Do(t, "PUT", tags+"/u.work", alice.AccessToken, `{}`), `{}`)
		requireJSON(t, s.Do(t, "PUT", tags+"/u.my%20team", alice.AccessToken, `{"order":1,"org.example.colour":"red"}`), `{}`)
		requireJSON(t, s.Do(t, "PUT", tags+"/u.work", alice.AccessToken, `{"order":0.5}`), `{}`) // replaced
		want := `{"tags":{"m.favourite":{"order":0.25},"u.my team":{"order":1,"org.example.colour":"red"},"u.work":{"order":0.5}}}`
		requireJSON(t, s.Do(t, "GET", tags, alice.AccessToken, nil), want)
		// The same entry is the room's m.tag account data, on both APIs and in /sync.
		requireJSON(t, s.Do(t, "GET", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/"+url.PathEscape(roomID)+"/account_data/m.tag",
			alice.AccessToken, nil), want)
		res := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(start), alice.AccessToken, nil)
		if got := roomAccountData(t, res.Raw, roomID, "m.tag"); !jsonEqual(got, want) {
			t.Fatalf("m.tag in sync = %s, want %s", got, want)
		}
		next := res.Str("next_batch")

		requireJSON(t, s.Do(t, "DELETE", tags+"/u.work", alice.AccessToken, nil), `{}`)
		want = `{"tags":{"m.favourite":{"order":0.25},"u.my team":{"order":1,"org.example.colour":"red"}}}`
		requireJSON(t, s.Do(t, "GET", tags, alice.AccessToken, nil), want)
		res = s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(next), alice.AccessToken, nil)
		if got := roomAccountData(t, res.Raw, roomID, "m.tag"); !jsonEqual(got, want) {
			t.Fatalf("m.tag in sync after the removal = %s, want %s", got, want)
		}
		next = res.Str("next_batch")
		// Removing it again, or setting a tag to what it is, succeeds and moves nothing.
		requireJSON(t, s.Do(t, "DELETE", tags+"/u.work", alice.AccessToken, nil), `{}`)
		requireJSON(t, s.Do(t, "PUT", tags+"/m.favourite", alice.AccessToken, `{"order":0.25}`), `{}`)
		res = s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(next), alice.AccessToken, nil)
		if got := roomAccountData(t, res.Raw, roomID, "m.tag"); got != nil {
			t.Fatalf("a change that changed nothing reached sync: %s", got)
		}

		// Tags are the user's own: bob's view of the room has none, and he cannot touch alice's.
		bobTags := "/_matrix/client/v3/user/" + bob.UserID + "/rooms/" + url.PathEscape(roomID) + "/tags"
		requireJSON(t, s.Do(t, "GET", bobTags, bob.AccessToken, nil), `{"tags":{}}`)
		for _, c := range []struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}{
			{"other user reads", "GET", tags, bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"other user adds", "PUT", tags + "/u.x", bob.AccessToken, `{}`, 403, "M_FORBIDDEN"},
			{"other user removes", "DELETE", tags + "/m.favourite", bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"no token", "GET", tags, "", nil, 401, "M_MISSING_TOKEN"},
			{"tag too long", "PUT", tags + "/" + strings.Repeat("t", 256), alice.AccessToken, `{}`, 400, "M_INVALID_PARAM"},
			{"body an array", "PUT", tags + "/u.x", alice.AccessToken, `[]`, 400, "M_BAD_JSON"},
			{"body null", "PUT", tags + "/u.x", alice.AccessToken, `null`, 400, "M_BAD_JSON"},
			{"order a string", "PUT", tags + "/u.x", alice.AccessToken, `{"order":"0.5"}`, 400, "M_BAD_JSON"},
			{"body not JSON", "PUT", tags + "/u.x", alice.AccessToken, `{"order":`, 400, "M_NOT_JSON"},
			{"invalid room", "GET", "/_matrix/client/v3/user/" + alice.UserID + "/rooms/notaroom/tags", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
			{"invalid room, add", "PUT", "/_matrix/client/v3/user/" + alice.UserID + "/rooms/notaroom/tags/u.x", alice.AccessToken, `{}`, 400, "M_INVALID_PARAM"},
		} {
			t.Run(c.name, func(t *testing.T) {
				requireStatusErrcode(t, s.Do(t, c.method, c.path, c.token, c.body), c.status, c.errcode)
			})
		}
		requireJSON(t, s.Do(t, "GET", tags, alice.AccessToken, nil), want) // nothing rejected was stored
		// A 255-byte tag is allowed.
		long := "u." + strings.Repeat("l", 253)
		requireJSON(t, s.Do(t, "PUT", tags+"/"+long, alice.AccessToken, `{}`), `{}`)
		if res := s.Do(t, "GET", tags, alice.AccessToken, nil); !strings.Contains(string(res.Raw), long) {
			t.Fatalf("255-byte tag not kept: %s", res.Raw)
		}
	})
}

// TestRoomTagsConcurrent: tags added at the same time (several devices) are all kept: each edit
// reads the tags after the one before it committed.
func TestRoomTagsConcurrent(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		const n = 16
		tags := "/_matrix/client/v3/user/" + alice.UserID + "/rooms/" + url.PathEscape("!r:localhost") + "/tags"
		putAtOnce(t, s, alice.AccessToken, n, func(i int) (string, any) { return fmt.Sprintf("%s/u.t%d", tags, i), `{}` })
		var got struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if err := json.Unmarshal(s.Do(t, "GET", tags, alice.AccessToken, nil).Raw, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Tags) != n {
			t.Fatalf("%d tags kept of %d added at once: %v", len(got.Tags), n, got.Tags)
		}
	})
}

// jsonEqual reports whether got is the same JSON value as want (key order and spacing aside).
func jsonEqual(got json.RawMessage, want string) bool {
	var g, w any
	if json.Unmarshal(got, &g) != nil || json.Unmarshal([]byte(want), &w) != nil {
		return false
	}
	a, _ := json.Marshal(g)
	b, _ := json.Marshal(w)
	return string(a) == string(b)
}

// putAtOnce sends n PUTs at the same time, the i-th to the path and with the body req(i) gives,
// and fails the test for each that does not succeed.
func putAtOnce(t *testing.T, s *servertest.Server, token string, n int, req func(i int) (path string, body any)) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, body := req(i)
			if res := s.Do(t, "PUT", path, token, body); res.Status != 200 {
				t.Errorf("PUT %s: %d %s", path, res.Status, res.Raw)
			}
		}()
	}
	wg.Wait()
}
