package clientapi_test

import (
	"context"
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
		// A small response is sent with its length too (net/http adds it), not chunked.
		if len(res.Raw) > 2048 || res.Header.Get("Content-Length") != strconv.Itoa(len(res.Raw)) {
			t.Fatalf("small response: Content-Length %q for %d bytes", res.Header.Get("Content-Length"), len(res.Raw))
		}
		// GET /sync is routed on the top router: other methods, a trailing slash and the
		// metrics' route label are as for the other client API routes.
		want(t, "POST /sync", s.Do(t, "POST", csAPI+"/sync", alice.AccessToken, map[string]any{}), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
		want(t, "/sync/", s.Do(t, "GET", csAPI+"/sync/", alice.AccessToken, nil), http.StatusNotFound, "M_UNRECOGNIZED")
		metrics := s.Do(t, "GET", "/metrics", "", nil)
		if !strings.Contains(string(metrics.Raw), `homeserver_http_requests_total{method="GET",route="/_matrix/client/v3/sync",status="200"}`) {
			t.Errorf("no /sync in the metrics: %.2000s", metrics.Raw)
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

// TestSyncStoredFiltersShared: users who stored the same filter get one parsed form of it (the
// sync service keeps a filter's plan by the identity of its parts), users with another filter
// their own; each user's filter IDs stay their own.
func TestSyncStoredFiltersShared(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	ctx := context.Background()
	same := []byte(`{"room":{"timeline":{"limit":7}}}`)
	ida, err := s.Accounts.CreateFilter(ctx, "alice", same)
	if err != nil {
		t.Fatal(err)
	}
	idb, err := s.Accounts.CreateFilter(ctx, "bob", same)
	if err != nil {
		t.Fatal(err)
	}
	idc, err := s.Accounts.CreateFilter(ctx, "carol", []byte(`{"room":{"timeline":{"limit":8}}}`))
	if err != nil {
		t.Fatal(err)
	}
	fa, err := s.API().SyncFilter(ctx, "alice", ida)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := s.API().SyncFilter(ctx, "bob", idb)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := s.API().SyncFilter(ctx, "carol", idc)
	if err != nil {
		t.Fatal(err)
	}
	if fa.Room == nil || fa.Room != fb.Room {
		t.Errorf("the same stored filter of two users is parsed twice: %p %p", fa.Room, fb.Room)
	}
	if fc.Room == fa.Room || fc.Room.Timeline.Limit != 8 || fa.Room.Timeline.Limit != 7 {
		t.Errorf("another filter shares the parsed form: limits %d and %d", fa.Room.Timeline.Limit, fc.Room.Timeline.Limit)
	}
	if _, err := s.API().SyncFilter(ctx, "bob", idc); err == nil && idc != idb {
		t.Errorf("bob reads carol's filter %s", idc)
	}
}
