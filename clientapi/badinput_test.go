package clientapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// TestBadInput sends malformed, mistyped, incomplete and oversize requests and unknown paths and
// methods: each must get the spec's errcode and status, never a 500.
func TestBadInput(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		created := s.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{})
		roomID, _ := created.JSON["room_id"].(string)
		if created.Status != 200 || roomID == "" {
			t.Fatalf("createRoom: %d %s", created.Status, created.Raw)
		}
		send := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/"
		big := `{"type":"m.login.password","password":"` + strings.Repeat("x", 70*1024) + `"}`
		cases := []struct {
			name, method, path string
			auth               bool
			body               any
			status             int
			errcode            string
		}{
			{"unknown endpoint", "GET", "/_matrix/client/v3/nonexistent", false, nil, 404, "M_UNRECOGNIZED"},
			{"unknown prefix", "GET", "/_matrix/whatever", false, nil, 404, "M_UNRECOGNIZED"},
			{"oauth metadata not supported", "GET", "/_matrix/client/v1/auth_metadata", false, nil, 404, "M_UNRECOGNIZED"},
			{"wrong method", "DELETE", "/_matrix/client/v3/login", false, nil, 405, "M_UNRECOGNIZED"},
			{"wrong method authed", "POST", "/_matrix/client/v3/account/whoami", true, "{}", 405, "M_UNRECOGNIZED"},
			{"login not json", "POST", "/_matrix/client/v3/login", false, "{not json", 400, "M_NOT_JSON"},
			{"login empty body", "POST", "/_matrix/client/v3/login", false, "", 400, "M_NOT_JSON"},
			{"login json array", "POST", "/_matrix/client/v3/login", false, "[1,2]", 400, "M_BAD_JSON"},
			{"login wrong type", "POST", "/_matrix/client/v3/login", false, `{"type":"m.login.password","password":12}`, 400, "M_BAD_JSON"},
			{"login identifier wrong type", "POST", "/_matrix/client/v3/login", false, `{"type":"m.login.password","identifier":"alice","password":"x"}`, 400, "M_BAD_JSON"},
			{"login missing type", "POST", "/_matrix/client/v3/login", false, `{"password":"x"}`, 400, "M_MISSING_PARAM"},
			{"login missing user", "POST", "/_matrix/client/v3/login", false, `{"type":"m.login.password","password":"x"}`, 400, "M_MISSING_PARAM"},
			{"login missing password", "POST", "/_matrix/client/v3/login", false, `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"}}`, 400, "M_MISSING_PARAM"},
			{"login unknown type", "POST", "/_matrix/client/v3/login", false, `{"type":"m.login.magic"}`, 400, "M_UNKNOWN"},
			{"login wrong password", "POST", "/_matrix/client/v3/login", false, `{"type":"m.login.password","user":"alice","password":"wrong"}`, 403, "M_FORBIDDEN"},
			{"login unknown user", "POST", "/_matrix/client/v3/login", false, `{"type":"m.login.password","user":"nobody","password":"wrong"}`, 403, "M_FORBIDDEN"},
			{"login other server", "POST", "/_matrix/client/v3/login", false, `{"type":"m.login.password","user":"@alice:elsewhere.org","password":"correct horse"}`, 403, "M_FORBIDDEN"},
			{"oversize body", "POST", "/_matrix/client/v3/login", false, big, 413, "M_TOO_LARGE"},
			{"register bad username", "POST", "/_matrix/client/v3/register", false, `{"username":"Bad Name!","password":"long enough"}`, 400, "M_INVALID_USERNAME"},
			{"register taken", "POST", "/_matrix/client/v3/register", false, `{"username":"alice","password":"long enough"}`, 400, "M_USER_IN_USE"},
			{"register weak password", "POST", "/_matrix/client/v3/register", false, `{"username":"bob","password":"short"}`, 400, "M_WEAK_PASSWORD"},
			{"register bad kind", "POST", "/_matrix/client/v3/register?kind=robot", false, `{}`, 400, "M_INVALID_PARAM"},
			{"register guest off", "POST", "/_matrix/client/v3/register?kind=guest", false, `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
			{"register username wrong type", "POST", "/_matrix/client/v3/register", false, `{"username":5}`, 400, "M_BAD_JSON"},
			{"register unknown session", "POST", "/_matrix/client/v3/register", false, `{"username":"carol","password":"long enough","auth":{"type":"m.login.dummy","session":"nope"}}`, 400, "M_NOT_FOUND"},
			{"register stage not offered", "POST", "/_matrix/client/v3/register", false, `{"username":"carol","password":"long enough","auth":{"type":"m.login.password"}}`, 401, "M_BAD_JSON"},
			{"available missing username", "GET", "/_matrix/client/v3/register/available", false, nil, 400, "M_MISSING_PARAM"},
			{"refresh missing token", "POST", "/_matrix/client/v3/refresh", false, `{}`, 400, "M_MISSING_PARAM"},
			{"refresh unknown token", "POST", "/_matrix/client/v3/refresh", false, `{"refresh_token":"nope"}`, 401, "M_UNKNOWN_TOKEN"},
			{"whoami no token", "GET", "/_matrix/client/v3/account/whoami", false, nil, 401, "M_MISSING_TOKEN"},
			{"device rename wrong type", "PUT", "/_matrix/client/v3/devices/" + alice.DeviceID, true, `{"display_name":7}`, 400, "M_BAD_JSON"},
			{"device rename unknown", "PUT", "/_matrix/client/v3/devices/NOPE", true, `{"display_name":"x"}`, 404, "M_NOT_FOUND"},
			{"device get unknown", "GET", "/_matrix/client/v3/devices/NOPE", true, nil, 404, "M_NOT_FOUND"},
			{"device delete unknown", "DELETE", "/_matrix/client/v3/devices/NOPE", true, nil, 404, "M_NOT_FOUND"},
			{"delete_devices missing list", "POST", "/_matrix/client/v3/delete_devices", true, `{}`, 400, "M_MISSING_PARAM"},
			{"delete_devices wrong type", "POST", "/_matrix/client/v3/delete_devices", true, `{"devices":"ABC"}`, 400, "M_BAD_JSON"},
			{"password missing new", "POST", "/_matrix/client/v3/account/password", true, `{}`, 400, "M_MISSING_PARAM"},
			{"password weak", "POST", "/_matrix/client/v3/account/password", true, `{"new_password":"x"}`, 400, "M_WEAK_PASSWORD"},
			{"password not json", "POST", "/_matrix/client/v3/account/password", true, `nope`, 400, "M_NOT_JSON"},
			{"send not json", "PUT", send + "t1", true, `{"body":`, 400, "M_NOT_JSON"},
			{"send empty body", "PUT", send + "t2", true, ``, 400, "M_NOT_JSON"},
			{"send json array", "PUT", send + "t3", true, `[{"body":"x"}]`, 400, "M_BAD_JSON"},
			{"send json string", "PUT", send + "t4", true, ` "x"`, 400, "M_BAD_JSON"},
			{"deactivate wrong password", "POST", "/_matrix/client/v3/account/deactivate", true,
				`{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"bad"}}`, 401, "M_FORBIDDEN"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				token := ""
				if c.auth {
					token = alice.AccessToken
				}
				res := s.Do(t, c.method, c.path, token, c.body)
				if res.Status != c.status || res.Errcode() != c.errcode {
					t.Fatalf("%s %s: got %d %s, want %d %s", c.method, c.path, res.Status, res.Raw, c.status, c.errcode)
				}
				if _, ok := res.JSON["error"].(string); !ok {
					t.Fatalf("error response without an error message: %s", res.Raw)
				}
			})
		}
		// Nothing above changed alice: her token and password still work.
		if res := s.Do(t, "GET", "/_matrix/client/v3/account/whoami", alice.AccessToken, nil); res.Status != 200 {
			t.Fatalf("whoami after bad input: %d %s", res.Status, res.Raw)
		}
		s.Login(t, "alice", "correct horse")
	}, func(c *config.Config) { c.HTTP.MaxBodyBytes = 64 * 1024 })
}

// TestUnknownToken checks M_UNKNOWN_TOKEN for a token that never existed, in the header form only:
// tokens in the query string are no longer part of the spec.
func TestUnknownToken(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	alice := s.Register(t, "alice", "correct horse")
	res := s.Do(t, "GET", "/_matrix/client/v3/account/whoami", "mat_doesnotexist", nil)
	if res.Status != 401 || res.Errcode() != "M_UNKNOWN_TOKEN" || res.JSON["soft_logout"] != false {
		t.Fatalf("unknown token: %d %s", res.Status, res.Raw)
	}
	res = s.Do(t, "GET", "/_matrix/client/v3/account/whoami?access_token="+alice.AccessToken, "", nil)
	if res.Status != 401 || res.Errcode() != "M_MISSING_TOKEN" {
		t.Fatalf("query-string token must not authenticate: %d %s", res.Status, res.Raw)
	}
}

// TestCORS checks the spec's CORS headers on normal, error and preflight responses.
func TestCORS(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	for _, method := range []string{"GET", "OPTIONS"} {
		for _, path := range []string{"/_matrix/client/versions", "/_matrix/client/v3/account/whoami", "/_matrix/client/v3/nothing"} {
			res := s.Do(t, method, path, "", nil)
			if method == "OPTIONS" && res.Status != http.StatusOK {
				t.Errorf("OPTIONS %s: status %d", path, res.Status)
			}
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("%s %s: Access-Control-Allow-Origin %q", method, path, got)
			}
			if got := res.Header.Get("Access-Control-Allow-Headers"); !strings.Contains(got, "Authorization") {
				t.Errorf("%s %s: Access-Control-Allow-Headers %q", method, path, got)
			}
			if got := res.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "PUT") {
				t.Errorf("%s %s: Access-Control-Allow-Methods %q", method, path, got)
			}
		}
	}
}

// TestRateLimit checks M_LIMIT_EXCEEDED with retry_after_ms and Retry-After once the per-IP bucket
// of a rate-limited endpoint is empty, and that other endpoints are not limited.
func TestRateLimit(t *testing.T) {
	s := servertest.Start(t, "sqlite", func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.PerIP = config.Rate{PerSecond: 0.01, Burst: 3}
	})
	body := `{"type":"m.login.password","user":"nobody","password":"x"}`
	for i := 0; i < 3; i++ {
		if res := s.Do(t, "POST", "/_matrix/client/v3/login", "", body); res.Status != 403 {
			t.Fatalf("attempt %d: %d %s", i, res.Status, res.Raw)
		}
	}
	res := s.Do(t, "POST", "/_matrix/client/v3/login", "", body)
	if res.Status != 429 || res.Errcode() != "M_LIMIT_EXCEEDED" {
		t.Fatalf("4th attempt: %d %s", res.Status, res.Raw)
	}
	if ms, ok := res.JSON["retry_after_ms"].(float64); !ok || ms <= 0 {
		t.Fatalf("retry_after_ms missing: %s", res.Raw)
	}
	if res.Header.Get("Retry-After") == "" {
		t.Fatalf("Retry-After header missing")
	}
	if res := s.Do(t, "GET", "/_matrix/client/versions", "", nil); res.Status != 200 {
		t.Fatalf("/versions must not be limited: %d", res.Status)
	}
	// An exempt IP is never limited.
	s2 := servertest.Start(t, "sqlite", func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.PerIP = config.Rate{PerSecond: 0.01, Burst: 1}
		c.RateLimits.ExemptIPs = []string{"127.0.0.0/8"}
	})
	for i := 0; i < 5; i++ {
		if res := s2.Do(t, "POST", "/_matrix/client/v3/login", "", body); res.Status != 403 {
			t.Fatalf("exempt attempt %d: %d %s", i, res.Status, res.Raw)
		}
	}
}
