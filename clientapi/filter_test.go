package clientapi_test

import (
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// specFilter is the example of POST /user/{userId}/filter in the spec, plus a key the spec does not
// define (kept as sent).
const specFilter = `{
	"room": {
		"state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
		"timeline": {"limit": 10, "types": ["m.room.message"], "not_rooms": ["!726s6s6q:example.com"],
			"not_senders": ["@spam:example.com"]},
		"ephemeral": {"types": ["m.receipt", "m.typing"], "not_rooms": ["!726s6s6q:example.com"],
			"not_senders": ["@spam:example.com"]}
	},
	"presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
	"event_format": "client",
	"event_fields": ["type", "content", "sender"],
	"org.example.extension": {"keep": true}
}`

func TestFilter(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		aliceFilters := "/_matrix/client/v3/user/" + alice.UserID + "/filter"
		bobFilters := "/_matrix/client/v3/user/" + bob.UserID + "/filter"

		create := func(path, token, body string) string {
			t.Helper()
			res := s.Do(t, "POST", path, token, body)
			id, ok := res.JSON["filter_id"].(string)
			if res.Status != 200 || !ok || id == "" || strings.HasPrefix(id, "{") {
				t.Fatalf("POST %s: %d %s, want 200 with a filter_id string", path, res.Status, res.Raw)
			}
			return id
		}
		first := create(aliceFilters, alice.AccessToken, specFilter)
		requireJSON(t, s.Do(t, "GET", aliceFilters+"/"+first, alice.AccessToken, nil), specFilter)
		second := create(aliceFilters, alice.AccessToken, `{}`)
		if second == first {
			t.Fatalf("two filters got the same id %s", first)
		}
		requireJSON(t, s.Do(t, "GET", aliceFilters+"/"+second, alice.AccessToken, nil), `{}`)
		requireJSON(t, s.Do(t, "GET", aliceFilters+"/"+first, alice.AccessToken, nil), specFilter)
		third := create("/_matrix/client/v3/user/%40alice%3Alocalhost/filter", alice.AccessToken,
			`{"room":{"timeline":{"limit":1},"rooms":[],"include_leave":false}}`)
		requireJSON(t, s.Do(t, "GET", "/_matrix/client/r0/user/%40alice%3Alocalhost/filter/"+third, alice.AccessToken, nil),
			`{"room":{"timeline":{"limit":1},"rooms":[],"include_leave":false}}`)

		bad := []struct{ name, body, errcode string }{
			{"not json", `{"room":`, "M_NOT_JSON"},
			{"empty body", ``, "M_NOT_JSON"},
			{"array", `[{}]`, "M_BAD_JSON"},
			{"limit zero", `{"room":{"timeline":{"limit":0}}}`, "M_BAD_JSON"},
			{"limit negative", `{"presence":{"limit":-1}}`, "M_BAD_JSON"},
			{"limit fraction", `{"room":{"state":{"limit":2.5}}}`, "M_BAD_JSON"},
			{"limit string", `{"account_data":{"limit":"5"}}`, "M_BAD_JSON"},
			{"event_format unknown", `{"event_format":"raw"}`, "M_BAD_JSON"},
			{"event_fields not strings", `{"event_fields":["type",{}]}`, "M_BAD_JSON"},
			{"room not object", `{"room":[]}`, "M_BAD_JSON"},
			{"types not array", `{"room":{"timeline":{"types":"m.room.message"}}}`, "M_BAD_JSON"},
			{"senders not user IDs", `{"room":{"timeline":{"senders":["spam"]}}}`, "M_BAD_JSON"},
			{"rooms not room IDs", `{"room":{"rooms":["#room:example.com"]}}`, "M_BAD_JSON"},
			{"include_leave not boolean", `{"room":{"include_leave":1}}`, "M_BAD_JSON"},
			{"lazy_load_members not boolean", `{"room":{"state":{"lazy_load_members":"true"}}}`, "M_BAD_JSON"},
		}
		for _, c := range bad {
			t.Run("create "+c.name, func(t *testing.T) {
				requireStatusErrcode(t, s.Do(t, "POST", aliceFilters, alice.AccessToken, c.body), 400, c.errcode)
			})
		}
		errs := []struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}{
			{"no token", "POST", aliceFilters, "", `{}`, 401, "M_MISSING_TOKEN"},
			{"create for another user", "POST", aliceFilters, bob.AccessToken, `{}`, 403, "M_FORBIDDEN"},
			{"create for a remote user", "POST", "/_matrix/client/v3/user/@bob:elsewhere.example/filter", bob.AccessToken, `{}`, 403, "M_FORBIDDEN"},
			{"read another user's", "GET", aliceFilters + "/" + first, bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"someone else's id on your own path", "GET", bobFilters + "/" + first, bob.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"unknown id", "GET", aliceFilters + "/999", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"non-numeric id", "GET", aliceFilters + "/abc", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"non-canonical id", "GET", aliceFilters + "/0" + first, alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"zero id", "GET", aliceFilters + "/0", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"inline JSON as id", "GET", aliceFilters + "/%7B%7D", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		}
		for _, c := range errs {
			t.Run(c.name, func(t *testing.T) {
				requireStatusErrcode(t, s.Do(t, c.method, c.path, c.token, c.body), c.status, c.errcode)
			})
		}
		// Bob's own filters work; alice's path stays closed to him.
		fourth := create(bobFilters, bob.AccessToken, `{"presence":{"types":[]}}`)
		requireJSON(t, s.Do(t, "GET", bobFilters+"/"+fourth, bob.AccessToken, nil), `{"presence":{"types":[]}}`)
		requireStatusErrcode(t, s.Do(t, "GET", aliceFilters+"/"+fourth, bob.AccessToken, nil), 403, "M_FORBIDDEN")
	})
}
