package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// TestOpenID requests an OpenID token and exchanges it through the federation API, as a third-party
// service would.
func TestOpenID(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		request := "/_matrix/client/v3/user/" + alice.UserID + "/openid/request_token"
		userinfo := func(token string) servertest.Response {
			return s.Do(t, "GET", "/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(token), "", nil)
		}

		res := s.Do(t, "POST", request, alice.AccessToken, `{}`)
		if res.Status != 200 || res.Str("access_token") == "" || res.Str("token_type") != "Bearer" ||
			res.Str("matrix_server_name") != "localhost" || res.JSON["expires_in"] != float64(3600) || len(res.JSON) != 4 {
			t.Fatalf("request_token: %d %s", res.Status, res.Raw)
		}
		token := res.Str("access_token")
		requireJSON(t, userinfo(token), `{"sub":"@alice:localhost"}`)
		requireJSON(t, userinfo(token), `{"sub":"@alice:localhost"}`) // usable until it expires

		// Each request gives a new token; escaped user IDs and the r0 prefix work.
		again := s.Do(t, "POST", "/_matrix/client/r0/user/%40alice%3Alocalhost/openid/request_token", alice.AccessToken, `{}`)
		if again.Status != 200 || again.Str("access_token") == token {
			t.Fatalf("second request_token: %d %s", again.Status, again.Raw)
		}
		requireJSON(t, userinfo(again.Str("access_token")), `{"sub":"@alice:localhost"}`)
		bobs := s.Do(t, "POST", "/_matrix/client/v3/user/"+bob.UserID+"/openid/request_token", bob.AccessToken, `{}`)
		requireJSON(t, userinfo(bobs.Str("access_token")), `{"sub":"@bob:localhost"}`)

		// The OpenID token is no access token, nor the other way round.
		requireStatusErrcode(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", token, nil), 401, "M_UNKNOWN_TOKEN")
		requireStatusErrcode(t, s.Do(t, "POST", request, token, `{}`), 401, "M_UNKNOWN_TOKEN")
		requireStatusErrcode(t, userinfo(alice.AccessToken), 401, "M_UNKNOWN_TOKEN")

		errs := []struct {
			name, path, token string
			body              any
			status            int
			errcode           string
		}{
			{"no token", request, "", `{}`, 401, "M_MISSING_TOKEN"},
			{"for another user", request, bob.AccessToken, `{}`, 403, "M_FORBIDDEN"},
			{"for a remote user", "/_matrix/client/v3/user/@alice:elsewhere.example/openid/request_token", alice.AccessToken, `{}`, 403, "M_FORBIDDEN"},
			{"body not json", request, alice.AccessToken, `{`, 400, "M_NOT_JSON"},
			{"body missing", request, alice.AccessToken, nil, 400, "M_NOT_JSON"},
			{"body array", request, alice.AccessToken, `[]`, 400, "M_BAD_JSON"},
		}
		for _, c := range errs {
			t.Run(c.name, func(t *testing.T) {
				requireStatusErrcode(t, s.Do(t, "POST", c.path, c.token, c.body), c.status, c.errcode)
			})
		}
		for name, tok := range map[string]string{"unknown": "moi_nope", "empty-ish": " "} {
			t.Run("userinfo "+name, func(t *testing.T) { requireStatusErrcode(t, userinfo(tok), 401, "M_UNKNOWN_TOKEN") })
		}
		requireStatusErrcode(t, s.Do(t, "GET", "/_matrix/federation/v1/openid/userinfo", "", nil), 401, "M_MISSING_TOKEN")
	})
}

// TestOpenIDTokenRevokedOnDeactivation checks that deactivating an account revokes its OpenID
// tokens, so a third party cannot keep identifying a closed account.
func TestOpenIDTokenRevokedOnDeactivation(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	a := s.Register(t, "alice", "alice password")
	res := s.Do(t, "POST", "/_matrix/client/v3/user/@alice:localhost/openid/request_token", a.AccessToken, map[string]any{})
	tok := res.Str("access_token")
	if res := s.Do(t, "GET", "/_matrix/federation/v1/openid/userinfo?access_token="+tok, "", nil); res.Status != 200 {
		t.Fatalf("userinfo before deactivation: %d %s", res.Status, res.Raw)
	}
	res = s.Do(t, "POST", "/_matrix/client/v3/account/deactivate", a.AccessToken, map[string]any{"auth": map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "alice password"}})
	if res.Status != 200 {
		t.Fatalf("deactivate: %d %s", res.Status, res.Raw)
	}
	if res := s.Do(t, "GET", "/_matrix/federation/v1/openid/userinfo?access_token="+tok, "", nil); res.Status != 401 {
		t.Fatalf("userinfo after deactivation: %d %s", res.Status, res.Raw)
	}
}
