package clientapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// requireStatusErrcode fails the test unless res has the status and errcode ("" for a success
// without errcode), and an error message with an errcode.
func requireStatusErrcode(t *testing.T, res servertest.Response, status int, errcode string) {
	t.Helper()
	if res.Status != status || res.Errcode() != errcode {
		t.Fatalf("got %d %s, want %d %s", res.Status, res.Raw, status, errcode)
	}
	if errcode != "" {
		if _, ok := res.JSON["error"].(string); !ok {
			t.Fatalf("error response without an error message: %s", res.Raw)
		}
	}
}

// requireJSON fails the test unless res is 200 with exactly the JSON want.
func requireJSON(t *testing.T, res servertest.Response, want string) {
	t.Helper()
	var got, exp any
	if res.Status != http.StatusOK || json.Unmarshal(res.Raw, &got) != nil {
		t.Fatalf("got %d %s, want 200 %s", res.Status, res.Raw, want)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("bad test JSON %s: %v", want, err)
	}
	g, _ := json.Marshal(got)
	e, _ := json.Marshal(exp)
	if string(g) != string(e) {
		t.Fatalf("got %s, want %s", g, e)
	}
}

func TestProfile(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		const v3 = "/_matrix/client/v3"
		profile := v3 + "/profile/" + alice.UserID

		// Registration gives a display name; profiles are public (no token) and visible to others.
		requireJSON(t, s.Do(t, "GET", profile, "", nil), `{"displayname":"alice"}`)

		steps := []struct {
			name, method, path, token string
			body                      any
			want                      string // 200 body
		}{
			{"set displayname", "PUT", profile + "/displayname", alice.AccessToken, `{"displayname":"Alice Liddell"}`, `{}`},
			{"read displayname anonymously", "GET", profile + "/displayname", "", nil, `{"displayname":"Alice Liddell"}`},
			{"read displayname as bob", "GET", profile + "/displayname", bob.AccessToken, nil, `{"displayname":"Alice Liddell"}`},
			{"set avatar", "PUT", profile + "/avatar_url", alice.AccessToken, `{"avatar_url":"mxc://localhost/AbC_12-3"}`, `{}`},
			{"set time zone", "PUT", profile + "/m.tz", alice.AccessToken, `{"m.tz":"Europe/London"}`, `{}`},
			{"set custom object", "PUT", profile + "/com.example.mood", alice.AccessToken,
				`{"com.example.mood":{"emoji":"🙂","tags":["a",1,null]}}`, `{}`},
			{"set custom null", "PUT", profile + "/org.example.nothing", alice.AccessToken, `{"org.example.nothing":null}`, `{}`},
			{"extra body keys are ignored", "PUT", profile + "/com.example.level", alice.AccessToken,
				`{"com.example.level":3,"other":"ignored"}`, `{}`},
			{"read custom", "GET", profile + "/com.example.mood", "", nil, `{"com.example.mood":{"emoji":"🙂","tags":["a",1,null]}}`},
			{"read null", "GET", profile + "/org.example.nothing", "", nil, `{"org.example.nothing":null}`},
			{"whole profile as bob", "GET", profile, bob.AccessToken, nil, `{"displayname":"Alice Liddell",
				"avatar_url":"mxc://localhost/AbC_12-3","m.tz":"Europe/London","com.example.mood":{"emoji":"🙂","tags":["a",1,null]},
				"org.example.nothing":null,"com.example.level":3}`},
			{"escaped path", "GET", v3 + "/profile/%40alice%3Alocalhost/com.example.level", "", nil, `{"com.example.level":3}`},
			{"escaped path write", "PUT", v3 + "/profile/%40alice%3Alocalhost/com.example.level", alice.AccessToken,
				`{"com.example.level":4}`, `{}`},
			{"r0 prefix", "GET", "/_matrix/client/r0/profile/" + alice.UserID + "/com.example.level", "", nil, `{"com.example.level":4}`},
			{"delete custom", "DELETE", profile + "/com.example.mood", alice.AccessToken, nil, `{}`},
			{"delete unset field", "DELETE", profile + "/com.example.mood", alice.AccessToken, nil, `{}`},
			{"delete null", "DELETE", profile + "/org.example.nothing", alice.AccessToken, nil, `{}`},
			{"delete level", "DELETE", profile + "/com.example.level", alice.AccessToken, nil, `{}`},
			{"empty avatar removes it", "PUT", profile + "/avatar_url", alice.AccessToken, `{"avatar_url":""}`, `{}`},
			{"profile after deletes", "GET", profile, "", nil, `{"displayname":"Alice Liddell","m.tz":"Europe/London"}`},
			{"empty displayname removes it", "PUT", profile + "/displayname", alice.AccessToken, `{"displayname":""}`, `{}`},
			{"delete time zone", "DELETE", profile + "/m.tz", alice.AccessToken, nil, `{}`},
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) { requireJSON(t, s.Do(t, st.method, st.path, st.token, st.body), st.want) })
		}

		longKey := "com." + strings.Repeat("a", 252) // 256 bytes
		errs := []struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}{
			{"empty profile is not found", "GET", profile, "", nil, 404, "M_NOT_FOUND"},
			{"unset field", "GET", profile + "/displayname", "", nil, 404, "M_NOT_FOUND"},
			{"unset custom field", "GET", profile + "/com.example.none", bob.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"unknown user", "GET", v3 + "/profile/@nobody:localhost", "", nil, 404, "M_NOT_FOUND"},
			{"unknown user field", "GET", v3 + "/profile/@nobody:localhost/displayname", "", nil, 404, "M_NOT_FOUND"},
			// Remote users are asked of their server (federation/directory_test.go); one that
			// cannot be reached (loopback is not allowed to federation here) gives 502.
			{"remote user", "GET", v3 + "/profile/@alice:127.0.0.1:1", "", nil, 502, "M_UNKNOWN"},
			{"remote user field", "GET", v3 + "/profile/@alice:127.0.0.1:1/displayname", "", nil, 502, "M_UNKNOWN"},
			{"not a user ID", "GET", v3 + "/profile/alice", "", nil, 400, "M_INVALID_PARAM"},
			{"invalid key on read", "GET", profile + "/Display", "", nil, 400, "M_INVALID_PARAM"},
			{"key too large on read", "GET", profile + "/" + longKey, "", nil, 400, "M_KEY_TOO_LARGE"},
			{"set without token", "PUT", profile + "/displayname", "", `{"displayname":"x"}`, 401, "M_MISSING_TOKEN"},
			{"delete without token", "DELETE", profile + "/displayname", "", nil, 401, "M_MISSING_TOKEN"},
			{"set someone else's", "PUT", profile + "/displayname", bob.AccessToken, `{"displayname":"mallory"}`, 403, "M_FORBIDDEN"},
			{"delete someone else's", "DELETE", profile + "/m.tz", bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"set a remote user's", "PUT", v3 + "/profile/@alice:elsewhere.example/displayname", alice.AccessToken, `{"displayname":"x"}`, 403, "M_FORBIDDEN"},
			{"set unknown user's", "PUT", v3 + "/profile/@nobody:localhost/displayname", alice.AccessToken, `{"displayname":"x"}`, 403, "M_FORBIDDEN"},
			{"set invalid user ID", "PUT", v3 + "/profile/alice/displayname", alice.AccessToken, `{"displayname":"x"}`, 400, "M_INVALID_PARAM"},
			{"invalid key upper case", "PUT", profile + "/Displayname", alice.AccessToken, `{"Displayname":"x"}`, 400, "M_INVALID_PARAM"},
			{"invalid key not namespaced", "PUT", profile + "/mood", alice.AccessToken, `{"mood":"x"}`, 400, "M_INVALID_PARAM"},
			{"invalid key on delete", "DELETE", profile + "/com..example", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
			{"key too large", "PUT", profile + "/" + longKey, alice.AccessToken, `{"` + longKey + `":1}`, 400, "M_KEY_TOO_LARGE"},
			{"key too large on delete", "DELETE", profile + "/" + longKey, alice.AccessToken, nil, 400, "M_KEY_TOO_LARGE"},
			{"body without the key", "PUT", profile + "/displayname", alice.AccessToken, `{"avatar_url":"mxc://a/b"}`, 400, "M_MISSING_PARAM"},
			{"body not json", "PUT", profile + "/displayname", alice.AccessToken, `{"displayname":`, 400, "M_NOT_JSON"},
			{"body empty", "PUT", profile + "/displayname", alice.AccessToken, ``, 400, "M_NOT_JSON"},
			{"body array", "PUT", profile + "/displayname", alice.AccessToken, `["displayname"]`, 400, "M_BAD_JSON"},
			{"displayname number", "PUT", profile + "/displayname", alice.AccessToken, `{"displayname":5}`, 400, "M_BAD_JSON"},
			{"displayname null", "PUT", profile + "/displayname", alice.AccessToken, `{"displayname":null}`, 400, "M_BAD_JSON"},
			{"displayname too long", "PUT", profile + "/displayname", alice.AccessToken,
				`{"displayname":"` + strings.Repeat("é", 257) + `"}`, 400, "M_INVALID_PARAM"},
			{"avatar not mxc", "PUT", profile + "/avatar_url", alice.AccessToken, `{"avatar_url":"https://example.com/a.png"}`, 400, "M_BAD_JSON"},
			{"avatar without media id", "PUT", profile + "/avatar_url", alice.AccessToken, `{"avatar_url":"mxc://localhost/"}`, 400, "M_BAD_JSON"},
			{"avatar bad media id", "PUT", profile + "/avatar_url", alice.AccessToken, `{"avatar_url":"mxc://localhost/a/b"}`, 400, "M_BAD_JSON"},
			{"avatar object", "PUT", profile + "/avatar_url", alice.AccessToken, `{"avatar_url":{"url":"mxc://a/b"}}`, 400, "M_BAD_JSON"},
			{"time zone number", "PUT", profile + "/m.tz", alice.AccessToken, `{"m.tz":0}`, 400, "M_BAD_JSON"},
		}
		for _, c := range errs {
			t.Run(c.name, func(t *testing.T) {
				requireStatusErrcode(t, s.Do(t, c.method, c.path, c.token, c.body), c.status, c.errcode)
			})
		}
		// Nothing of the rejected writes was stored.
		requireStatusErrcode(t, s.Do(t, "GET", profile, "", nil), 404, "M_NOT_FOUND")
	})
}

// TestProfileSizeLimit: the whole profile may be 64 KiB, not one byte more.
func TestProfileSizeLimit(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		carol := s.Register(t, "carol", "correct horse")
		profile := "/_matrix/client/v3/profile/" + carol.UserID
		// {"displayname":"carol","com.example.big":"x…x"} is 44 bytes plus the string.
		fill := 64*1024 - 44
		put := func(key string, n int) servertest.Response {
			return s.Do(t, "PUT", profile+"/"+key, carol.AccessToken, map[string]any{key: strings.Repeat("x", n)})
		}
		requireStatusErrcode(t, put("com.example.big", fill+1), 400, "M_PROFILE_TOO_LARGE")
		requireJSON(t, put("com.example.big", fill), `{}`)
		requireStatusErrcode(t, put("com.example.more", 0), 400, "M_PROFILE_TOO_LARGE")
		requireStatusErrcode(t, s.Do(t, "PUT", profile+"/displayname", carol.AccessToken, `{"displayname":"carol2"}`), 400, "M_PROFILE_TOO_LARGE")
		// Replacing a field by a smaller value, and deleting, work at the limit.
		requireJSON(t, put("com.example.big", 10), `{}`)
		requireJSON(t, put("com.example.more", 100), `{}`)
		res := s.Do(t, "GET", profile, "", nil)
		if res.Status != 200 || len(res.JSON) != 3 || res.Str("com.example.big") != "xxxxxxxxxx" {
			t.Fatalf("profile after the limit tests: %d %.200s", res.Status, res.Raw)
		}
	})
}

// TestProfileConcurrentWrites: concurrent writes of different keys cannot together pass the size
// limit; one of several 40 KiB fields fits.
func TestProfileConcurrentWrites(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		dave := s.Register(t, "dave", "correct horse")
		const writers = 6
		statuses := make(chan int, writers)
		for i := range writers {
			key := fmt.Sprintf("com.example.f%d", i)
			body, _ := json.Marshal(map[string]string{key: strings.Repeat("x", 40*1024)})
			go func() {
				req, _ := http.NewRequest("PUT", s.URL+"/_matrix/client/v3/profile/"+dave.UserID+"/"+key, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+dave.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					statuses <- 0
					return
				}
				resp.Body.Close()
				statuses <- resp.StatusCode
			}()
		}
		count := map[int]int{}
		for range writers {
			count[<-statuses]++
		}
		if count[200] != 1 || count[400] != writers-1 {
			t.Fatalf("statuses of %d concurrent 40 KiB writes: %v, want one 200 and the rest 400", writers, count)
		}
		res := s.Do(t, "GET", "/_matrix/client/v3/profile/"+dave.UserID, "", nil)
		if res.Status != 200 || len(res.JSON) != 2 || len(res.Raw) > 64*1024 {
			t.Fatalf("profile after concurrent writes: %d, %d fields, %d bytes", res.Status, len(res.JSON), len(res.Raw))
		}
	})
}

// TestProfileDeactivated: a deactivated user has no profile, for anyone.
func TestProfileDeactivated(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		profile := "/_matrix/client/v3/profile/" + alice.UserID
		requireJSON(t, s.Do(t, "PUT", profile+"/avatar_url", alice.AccessToken, `{"avatar_url":"mxc://localhost/abc"}`), `{}`)
		requireJSON(t, s.Do(t, "GET", profile, bob.AccessToken, nil), `{"displayname":"alice","avatar_url":"mxc://localhost/abc"}`)

		first := s.Do(t, "POST", "/_matrix/client/v3/account/deactivate", alice.AccessToken, `{}`)
		requireStatusErrcode(t, first, 401, "")
		res := s.Do(t, "POST", "/_matrix/client/v3/account/deactivate", alice.AccessToken, map[string]any{
			"auth": map[string]any{"type": "m.login.password", "session": first.Str("session"),
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "correct horse"}})
		if res.Status != 200 {
			t.Fatalf("deactivate: %d %s", res.Status, res.Raw)
		}

		for _, tok := range []string{"", bob.AccessToken} {
			requireStatusErrcode(t, s.Do(t, "GET", profile, tok, nil), 404, "M_NOT_FOUND")
			requireStatusErrcode(t, s.Do(t, "GET", profile+"/displayname", tok, nil), 404, "M_NOT_FOUND")
			requireStatusErrcode(t, s.Do(t, "GET", profile+"/avatar_url", tok, nil), 404, "M_NOT_FOUND")
		}
		requireStatusErrcode(t, s.Do(t, "PUT", profile+"/displayname", alice.AccessToken, `{"displayname":"back"}`), 401, "M_UNKNOWN_TOKEN")
		requireJSON(t, s.Do(t, "GET", "/_matrix/client/v3/profile/"+bob.UserID, "", nil), `{"displayname":"bob"}`)
	})
}
