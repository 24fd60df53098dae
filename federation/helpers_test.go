package federation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// The scaffolding the federation tests share: two servers with their first users, rooms created
// and joined through the client API, /sync read one response at a time.

// fedPair is two of our servers, hs1 on ip1 and hs2 on ip2, with certificates from one CA; alice
// is registered on hs1 and bob on hs2.
type fedPair struct {
	ca         *servertest.CA
	hs1, hs2   *servertest.Server
	alice, bob servertest.User
}

// newFedPair starts a fedPair on backend; mutate applies to the configuration of both servers.
func newFedPair(t testing.TB, backend string, mutate ...func(*config.Config)) fedPair {
	t.Helper()
	p := fedPair{ca: servertest.NewCA(t)}
	p.hs1 = servertest.Start(t, backend, append([]func(*config.Config){servertest.Federated(t, p.ca, ip1)}, mutate...)...)
	p.hs2 = servertest.Start(t, backend, append([]func(*config.Config){servertest.Federated(t, p.ca, ip2)}, mutate...)...)
	p.alice = p.hs1.Register(t, "alice", "alice-password-1")
	p.bob = p.hs2.Register(t, "bob", "bob-password-12")
	return p
}

// createRoom is POST /createRoom for u on hs; it returns the room ID.
func createRoom(t testing.TB, hs *servertest.Server, u servertest.User, body map[string]any) string {
	t.Helper()
	res := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", u.AccessToken, body)
	if res.Status != 200 {
		t.Fatalf("createRoom %v: %d %s", body, res.Status, res.Raw)
	}
	return res.Str("room_id")
}

// joinVia is POST /join/{roomIdOrAlias}?via=via for u on hs (over federation when hs is not in
// the room).
func joinVia(t testing.TB, hs *servertest.Server, u servertest.User, roomID, via string) {
	t.Helper()
	res := hs.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?via="+url.QueryEscape(via), u.AccessToken, map[string]any{})
	if res.Status != 200 {
		t.Fatalf("%s joins %s: %d %s", u.UserID, roomID, res.Status, res.Raw)
	}
}

// syncOnce runs one /sync for u on hs from since ("" for an initial sync), long-polling up to
// timeoutMS, with filter unless it is empty, and decodes the response into out.
func syncOnce(t testing.TB, hs *servertest.Server, u servertest.User, since, filter string, timeoutMS int, out any) {
	t.Helper()
	q := url.Values{"timeout": {fmt.Sprint(timeoutMS)}}
	if filter != "" {
		q.Set("filter", filter)
	}
	if since != "" {
		q.Set("since", since)
	}
	res := hs.Do(t, "GET", "/_matrix/client/v3/sync?"+q.Encode(), u.AccessToken, nil)
	if res.Status != 200 {
		t.Fatalf("sync %s: %d %s", u.UserID, res.Status, res.Raw)
	}
	if err := json.Unmarshal(res.Raw, out); err != nil {
		t.Fatalf("sync %s: %v", u.UserID, err)
	}
}

// syncBody is the part of a /sync response that tells typing, receipts and presence.
type syncBody struct {
	NextBatch string `json:"next_batch"`
	Presence  struct {
		Events []struct {
			Type    string          `json:"type"`
			Sender  string          `json:"sender"`
			Content json.RawMessage `json:"content"`
		} `json:"events"`
	} `json:"presence"`
	Rooms struct {
		Join map[string]struct {
			Ephemeral struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
}

// syncUntil calls sync (one /sync of a follower) until cond holds, 20 s at most; a timeout fails
// the test with what was awaited and what seen reports of the follower.
func syncUntil(t testing.TB, what string, cond func() bool, sync func(), seen func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; %s", what, seen())
		}
		sync()
	}
}

// sendEDUs sends a transaction of EDUs from one server to another, signed by the sender; the
// receiver processes its EDUs before it answers. txnID "" picks a fresh one.
func sendEDUs(t testing.TB, from, to *servertest.Server, txnID string, edus ...map[string]any) {
	t.Helper()
	if txnID == "" {
		txnID = fmt.Sprintf("edu-%d", time.Now().UnixNano())
	}
	body := map[string]any{"origin": from.Config.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{}, "edus": edus}
	var resp map[string]any
	if err := from.Federation.Client().DoJSON(context.Background(), to.Config.ServerName, "PUT",
		"/_matrix/federation/v1/send/"+txnID, body, &resp); err != nil {
		t.Fatalf("PUT /send/%s: %v", txnID, err)
	}
}

// isFedError reports whether err is a Matrix error of another server with this status and errcode.
func isFedError(err error, status int, code string) bool {
	var fe *fedclient.Error
	return errors.As(err, &fe) && fe.Status == status && fe.Code == code
}
