package clientapi_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
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

// TestSyncResponsesConcurrent: /sync writes its responses from pooled buffers; many at once, each
// is whole (JSON, with its own Content-Type and Content-Length) and only its user's.
func TestSyncResponsesConcurrent(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		users := []servertest.User{s.Register(t, "alice", "password-alice"), s.Register(t, "bob", "password-bob")}
		for _, u := range users {
			roomID := newRoom(t, s, u, nil)
			sendText(t, s, u, roomID, "for "+u.Localpart+" "+strings.Repeat(u.Localpart, 2000)) // over a pooled buffer's first size
		}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u, other := users[i%2], users[1-i%2]
				for range 10 {
					res := s.Do(t, "GET", csAPI+"/sync?timeout=0", u.AccessToken, nil)
					if res.Status != http.StatusOK || res.JSON == nil || res.Header.Get("Content-Type") != "application/json" ||
						res.Header.Get("Content-Length") != strconv.Itoa(len(res.Raw)) {
						t.Errorf("%s: %d %v %.200s", u.Localpart, res.Status, res.Header, res.Raw)
						return
					}
					if !strings.Contains(string(res.Raw), `"for `+u.Localpart) || strings.Contains(string(res.Raw), `"for `+other.Localpart) {
						t.Errorf("%s got a response that is not its own: %.300s", u.Localpart, res.Raw)
						return
					}
				}
			}()
		}
		wg.Wait()
	})
}
