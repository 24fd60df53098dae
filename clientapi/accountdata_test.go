package clientapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

func TestAccountData(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		user := "/_matrix/client/v3/user/" + alice.UserID
		global := user + "/account_data/"
		room := user + "/rooms/!room:localhost/account_data/"
		v12Room := "!" + strings.Repeat("Ab0-_", 8) + "xyz" // 43 characters of URL-safe base64
		steps := []struct {
			name, method, path string
			body               any
			want               string
		}{
			{"set global", "PUT", global + "org.example.config", `{"theme":"dark","n":[1,2]}`, `{}`},
			{"get global", "GET", global + "org.example.config", nil, `{"theme":"dark","n":[1,2]}`},
			{"set per-room, same type", "PUT", room + "org.example.config", `{"theme":"light"}`, `{}`},
			{"per-room does not change global", "GET", global + "org.example.config", nil, `{"theme":"dark","n":[1,2]}`},
			{"get per-room", "GET", room + "org.example.config", nil, `{"theme":"light"}`},
			{"overwrite global", "PUT", global + "org.example.config", `{"theme":"blue"}`, `{}`},
			{"get overwritten", "GET", global + "org.example.config", nil, `{"theme":"blue"}`},
			{"per-room unchanged", "GET", room + "org.example.config", nil, `{"theme":"light"}`},
			{"empty object", "PUT", global + "m.ignored_user_list", `{}`, `{}`},
			{"get empty object", "GET", global + "m.ignored_user_list", nil, `{}`},
			{"tags", "PUT", room + "m.tag", `{"tags":{"u.work":{"order":0.5}}}`, `{}`},
			{"escaped room and user", "GET", "/_matrix/client/v3/user/%40alice%3Alocalhost/rooms/%21room%3Alocalhost/account_data/m.tag", nil,
				`{"tags":{"u.work":{"order":0.5}}}`},
			{"escaped slash in type", "PUT", global + "org.example%2Fslash", `{"s":1}`, `{}`},
			{"get escaped slash in type", "GET", global + "org.example%2Fslash", nil, `{"s":1}`},
			{"room version 12 room ID", "PUT", user + "/rooms/" + v12Room + "/account_data/m.tag", `{"tags":{}}`, `{}`},
			{"get room version 12 room ID", "GET", user + "/rooms/" + v12Room + "/account_data/m.tag", nil, `{"tags":{}}`},
			{"room ID with port", "PUT", user + "/rooms/!r:example.org:8448/account_data/m.tag", `{"tags":{}}`, `{}`},
			{"r0 prefix", "GET", "/_matrix/client/r0/user/" + alice.UserID + "/account_data/org.example.config", nil, `{"theme":"blue"}`},
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) { requireJSON(t, s.Do(t, st.method, st.path, alice.AccessToken, st.body), st.want) })
		}

		type errCase struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}
		errs := []errCase{
			{"no global fallback for rooms", "GET", user + "/rooms/!other:localhost/account_data/org.example.config", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"no room data in global", "GET", global + "m.tag", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"missing global", "GET", global + "org.example.none", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"missing per-room", "GET", room + "org.example.none", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"no token", "GET", global + "org.example.config", "", nil, 401, "M_MISSING_TOKEN"},
			{"other user reads global", "GET", global + "org.example.config", bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"other user writes global", "PUT", global + "org.example.config", bob.AccessToken, `{"x":1}`, 403, "M_FORBIDDEN"},
			{"other user reads per-room", "GET", room + "org.example.config", bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"other user writes per-room", "PUT", room + "org.example.config", bob.AccessToken, `{"x":1}`, 403, "M_FORBIDDEN"},
			{"remote user", "GET", "/_matrix/client/v3/user/@alice:elsewhere.example/account_data/x", alice.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"set m.fully_read", "PUT", global + "m.fully_read", alice.AccessToken, `{"event_id":"$e"}`, 405, "M_BAD_JSON"},
			{"set m.push_rules", "PUT", global + "m.push_rules", alice.AccessToken, `{"global":{}}`, 405, "M_BAD_JSON"},
			{"set per-room m.fully_read", "PUT", room + "m.fully_read", alice.AccessToken, `{"event_id":"$e"}`, 405, "M_BAD_JSON"},
			{"set per-room m.push_rules", "PUT", room + "m.push_rules", alice.AccessToken, `{}`, 405, "M_BAD_JSON"},
			{"read m.fully_read is allowed", "GET", room + "m.fully_read", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"body array", "PUT", global + "org.example.x", alice.AccessToken, `[1]`, 400, "M_BAD_JSON"},
			{"body string", "PUT", global + "org.example.x", alice.AccessToken, `"x"`, 400, "M_BAD_JSON"},
			{"body null", "PUT", room + "org.example.x", alice.AccessToken, `null`, 400, "M_BAD_JSON"},
			{"body not json", "PUT", global + "org.example.x", alice.AccessToken, `{"a":`, 400, "M_NOT_JSON"},
			{"body empty", "PUT", room + "org.example.x", alice.AccessToken, ``, 400, "M_NOT_JSON"},
			{"type too long", "PUT", global + strings.Repeat("t", 256), alice.AccessToken, `{}`, 400, "M_INVALID_PARAM"},
		}
		for _, bad := range []string{"notaroom", "@alice:localhost", "%23alias%3Alocalhost", "!", "!:localhost", "!room:", "!room:bad%20server",
			"!has.dot", "!" + strings.Repeat("a", 255)} {
			path := user + "/rooms/" + bad + "/account_data/m.tag"
			errs = append(errs,
				errCase{"get invalid room " + bad, "GET", path, alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
				errCase{"put invalid room " + bad, "PUT", path, alice.AccessToken, `{}`, 400, "M_INVALID_PARAM"})
		}
		for _, c := range errs {
			t.Run(c.name, func(t *testing.T) {
				requireStatusErrcode(t, s.Do(t, c.method, c.path, c.token, c.body), c.status, c.errcode)
			})
		}
		// Rejected writes stored nothing.
		requireStatusErrcode(t, s.Do(t, "GET", global+"m.fully_read", alice.AccessToken, nil), 404, "M_NOT_FOUND")
		requireStatusErrcode(t, s.Do(t, "GET", global+"org.example.x", alice.AccessToken, nil), 404, "M_NOT_FOUND")
		requireJSON(t, s.Do(t, "GET", global+"org.example.config", alice.AccessToken, nil), `{"theme":"blue"}`)
		// Bob's data is his own.
		requireStatusErrcode(t, s.Do(t, "GET", "/_matrix/client/v3/user/"+bob.UserID+"/account_data/org.example.config", bob.AccessToken, nil), 404, "M_NOT_FOUND")
	})
}

// TestAccountDataNotice: each write announces the user and a new, higher stream position on the bus.
func TestAccountDataNotice(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		notices := make(chan []byte, 16)
		sub, err := s.Bus.Subscribe(bus.SubjectAccountData, func(data []byte) { notices <- data })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		if err := s.Bus.Conn.Flush(); err != nil { // the subscription is registered before the writes
			t.Fatal(err)
		}
		next := func() (user string, pos int64) {
			t.Helper()
			select {
			case data := <-notices:
				var n struct {
					UserID string `json:"user_id"`
					Pos    int64  `json:"pos"`
				}
				if err := json.Unmarshal(data, &n); err != nil {
					t.Fatalf("notice %s: %v", data, err)
				}
				return n.UserID, n.Pos
			case <-time.After(10 * time.Second):
				t.Fatal("no account data notice within 10s")
				return "", 0
			}
		}
		base := "/_matrix/client/v3/user/" + alice.UserID
		var last int64
		for i, path := range []string{base + "/account_data/org.example.a", base + "/rooms/!r:localhost/account_data/org.example.a",
			base + "/account_data/org.example.a"} {
			requireJSON(t, s.Do(t, "PUT", path, alice.AccessToken, `{"i":1}`), `{}`)
			user, pos := next()
			if user != alice.UserID || pos <= last {
				t.Fatalf("notice %d: user %s pos %d, want %s and a position above %d", i, user, pos, alice.UserID, last)
			}
			last = pos
		}
		// A rejected write takes no position and announces nothing.
		requireStatusErrcode(t, s.Do(t, "PUT", base+"/account_data/m.fully_read", alice.AccessToken, `{}`), 405, "M_BAD_JSON")
		requireJSON(t, s.Do(t, "PUT", base+"/account_data/org.example.b", alice.AccessToken, `{}`), `{}`)
		if _, pos := next(); pos != last+1 {
			t.Fatalf("position after a rejected write: %d, want %d", pos, last+1)
		}
	})
}
