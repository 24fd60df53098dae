package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// The /sync assembly is tested in homeserver/sync; these are the handler's parameter checks.
func TestSyncParameters(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		res := s.Do(t, "GET", csAPI+"/sync", "", nil)
		want(t, "no token", res, http.StatusUnauthorized, "M_MISSING_TOKEN")
		res = s.Do(t, "GET", csAPI+"/sync?timeout=0&full_state=false&set_presence=offline", alice.AccessToken, nil)
		want(t, "plain sync", res, http.StatusOK, "")
		if res.Str("next_batch") == "" {
			t.Fatalf("no next_batch: %s", res.Raw)
		}
		for _, q := range []string{"timeout=soon", "full_state=yes", "set_presence=busy", "since=nonsense", "filter=999",
			"filter=" + "%7B%22room%22%3A1%7D"} {
			res := s.Do(t, "GET", csAPI+"/sync?"+q, alice.AccessToken, nil)
			if res.Status != http.StatusBadRequest {
				t.Errorf("%s: %d %s", q, res.Status, res.Raw)
			}
		}
		// r0 serves it too.
		res = s.Do(t, "GET", "/_matrix/client/r0/sync", alice.AccessToken, nil)
		want(t, "r0 sync", res, http.StatusOK, "")
	})
}
