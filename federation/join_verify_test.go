package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/federation/serverkey"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// A remote join verifies the whole state of the room or does not happen: neither a key fetch
// that failed nor a resident server's bad answer may leave the joining server in the room with
// part of its state.

// TestJoinAfterResidentKeyFetchFailed: hs2 asked for hs1's keys while hs1 was down, so its key
// ring would not ask again for a minute. Bob's join through hs1 within that minute still
// verifies hs1's events (one fresh fetch for the join) and stores the full state.
func TestJoinAfterResidentKeyFetchFailed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		ca := servertest.NewCA(t)
		hs2 := servertest.Start(t, backend, servertest.Federated(t, ca, ip2), fastRetry)
		bob := hs2.Register(t, "bob", "bob-password-12")
		fed1 := servertest.Federated(t, ca, ip1)
		named := config.Default()
		fed1(named)
		name1 := named.ServerName

		_, err := hs2.Federation.Keys().Key(ctx, name1, "ed25519:a", time.Now().UnixMilli())
		if !errors.Is(err, serverkey.ErrKeyUnavailable) {
			t.Fatalf("key of a server that is down: %v, want ErrKeyUnavailable", err)
		}

		hs1 := servertest.Start(t, backend, fed1, fastRetry)
		alice := hs1.Register(t, "alice", "alice-password-1")
		roomID := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "name": "Keys came late"})
		joinVia(t, hs2, bob, roomID, name1)
		assertFullState(t, hs2, bob, roomID, alice.UserID)
	})
}

// assertFullState checks what u on hs sees of a room it joined: its create event, its name,
// and creator among the joined members.
func assertFullState(t *testing.T, hs *servertest.Server, u servertest.User, roomID, creator string) {
	t.Helper()
	room := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
	if res := hs.Do(t, "GET", room+"/state/m.room.create/", u.AccessToken, nil); res.Status != 200 {
		t.Errorf("the create event on the joining server: %d %s", res.Status, res.Raw)
	}
	if res := hs.Do(t, "GET", room+"/state/m.room.name/", u.AccessToken, nil); res.Status != 200 {
		t.Errorf("the room's name on the joining server: %d %s", res.Status, res.Raw)
	}
	res := hs.Do(t, "GET", room+"/joined_members", u.AccessToken, nil)
	var jm struct {
		Joined map[string]any `json:"joined"`
	}
	if res.Status != 200 || json.Unmarshal(res.Raw, &jm) != nil || jm.Joined[creator] == nil || jm.Joined[u.UserID] == nil {
		t.Errorf("joined members on the joining server lack %s or %s: %d %s", creator, u.UserID, res.Status, res.Raw)
	}
}

// TestJoinRefusesPartialState: a resident server whose send_join answer lacks an event the room
// needs, or carries it with a forged signature, is not joined through: with only that server
// the join fails with a Matrix error and stores nothing of the room; with an honest server after
// it in the via list, the join goes through that one, with the full state.
func TestJoinRefusesPartialState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		name1 := p.hs1.Config.ServerName
		for _, tc := range []struct {
			name   string
			tamper func(t *testing.T, ev map[string]any) (keep bool)
			isIt   func(ev map[string]any) bool
		}{
			{"no create event", dropEvent, isCreate},
			{"forged create event", forgeSignature(name1), isCreate},
			{"forged creator membership", forgeSignature(name1), isMemberOf(p.alice.UserID)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				// Version 12: the room ID names no server that the client API would add to via.
				roomID := createRoom(t, p.hs1, p.alice, map[string]any{"preset": "public_chat", "name": "Tampered", "room_version": "12"})
				bad := newTamperingResident(t, p.ca, p.hs2, name1, func(ev map[string]any) bool {
					return !tc.isIt(ev) || tc.tamper(t, ev)
				})

				res := p.hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?via="+url.QueryEscape(bad),
					p.bob.AccessToken, map[string]any{})
				if res.Status == 200 || res.Status >= 500 || res.Errcode() == "" {
					t.Fatalf("join through the tampering server: %d %s", res.Status, res.Raw)
				}
				if known, err := p.hs2.Rooms.KnownRoom(ctx, roomID); err != nil || known {
					t.Fatalf("hs2 stored the room after a refused join: known %v, %v", known, err)
				}

				q := url.Values{"via": {bad, name1}}
				res = p.hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?"+q.Encode(),
					p.bob.AccessToken, map[string]any{})
				if res.Status != 200 {
					t.Fatalf("join through the tampering server, then hs1: %d %s", res.Status, res.Raw)
				}
				assertFullState(t, p.hs2, p.bob, roomID, p.alice.UserID)
			})
		}
	})
}

func isCreate(ev map[string]any) bool { return ev["type"] == "m.room.create" }

func isMemberOf(userID string) func(map[string]any) bool {
	return func(ev map[string]any) bool { return ev["type"] == "m.room.member" && ev["state_key"] == userID }
}

func dropEvent(*testing.T, map[string]any) bool { return false }

// forgeSignature replaces server's signatures of the event with ones by another key under the
// same key IDs: they do not verify with server's real key.
func forgeSignature(server string) func(t *testing.T, ev map[string]any) bool {
	return func(t *testing.T, ev map[string]any) bool {
		_, other, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sigs, _ := ev["signatures"].(map[string]any)[server].(map[string]any)
		if len(sigs) == 0 {
			t.Fatalf("the event has no signature by %s: %v", server, ev)
		}
		for keyID := range sigs {
			sigs[keyID] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(other, []byte("not the event")))
		}
		return true
	}
}

// newTamperingResident starts a federation server on ip3 that passes make_join and send_join on
// to resident (signed as joiner, with joiner's client) and edits the events of the send_join
// answer's state and auth chain with edit, which may change an event and returns whether to keep
// it. It returns the server's name.
func newTamperingResident(t *testing.T, ca *servertest.CA, joiner *servertest.Server, resident string, edit func(ev map[string]any) bool) string {
	t.Helper()
	crt, err := cert.Issue(ca.CertPEM, ca.KeyPEM, []string{ip3})
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", net.JoinHostPort(ip3, "0"), &tls.Config{Certificates: []tls.Certificate{crt}})
	if err != nil {
		t.Fatal(err)
	}
	fail := func(w http.ResponseWriter, err error) {
		t.Logf("tampering resident: %v", err)
		http.Error(w, `{"errcode":"M_UNKNOWN"}`, http.StatusBadGateway)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		switch {
		case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/make_join/"):
			body, err := joiner.Federation.Client().Do(ctx, resident, "GET", r.URL.RequestURI(), nil)
			if err != nil {
				fail(w, err)
				return
			}
			_, _ = w.Write(body)
		case r.Method == "PUT" && strings.HasPrefix(r.URL.Path, "/_matrix/federation/v2/send_join/"):
			join, err := io.ReadAll(r.Body)
			if err != nil {
				fail(w, err)
				return
			}
			body, err := joiner.Federation.Client().Do(ctx, resident, "PUT", r.URL.RequestURI(), json.RawMessage(join))
			if err != nil {
				fail(w, err)
				return
			}
			var answer map[string]any
			dec := json.NewDecoder(strings.NewReader(string(body)))
			dec.UseNumber() // depth and timestamps pass unchanged
			if err := dec.Decode(&answer); err != nil {
				fail(w, err)
				return
			}
			for _, list := range []string{"state", "auth_chain"} {
				evs, _ := answer[list].([]any)
				kept := evs[:0]
				for _, ev := range evs {
					if edit(ev.(map[string]any)) {
						kept = append(kept, ev)
					}
				}
				answer[list] = kept
			}
			out, _ := json.Marshal(answer)
			_, _ = w.Write(out)
		default:
			http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return net.JoinHostPort(ip3, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
}
