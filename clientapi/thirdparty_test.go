package clientapi_test

import (
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// TestThirdParty: without bridges the server knows no protocol: an empty protocol list, M_NOT_FOUND
// for any protocol's metadata, portal rooms and users, empty reverse lookups; a token is required.
func TestThirdParty(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password alice")
		base := "/_matrix/client/v3/thirdparty"
		requireJSON(t, s.Do(t, "GET", base+"/protocols", alice.AccessToken, nil), `{}`)
		requireJSON(t, s.Do(t, "GET", base+"/location?alias=%23room%3Alocalhost", alice.AccessToken, nil), `[]`)
		requireJSON(t, s.Do(t, "GET", base+"/user?userid=%40alice%3Alocalhost", alice.AccessToken, nil), `[]`)
		for _, c := range []struct {
			path, token string
			status      int
			errcode     string
		}{
			{base + "/protocol/irc", alice.AccessToken, 404, "M_NOT_FOUND"},
			{base + "/location/irc?searchFields=x", alice.AccessToken, 404, "M_NOT_FOUND"},
			{base + "/user/irc", alice.AccessToken, 404, "M_NOT_FOUND"},
			{base + "/location", alice.AccessToken, 400, "M_MISSING_PARAM"},
			{base + "/user", alice.AccessToken, 400, "M_MISSING_PARAM"},
			{base + "/protocols", "", 401, "M_MISSING_TOKEN"},
		} {
			requireStatusErrcode(t, s.Do(t, "GET", c.path, c.token, nil), c.status, c.errcode)
		}
	})
}
