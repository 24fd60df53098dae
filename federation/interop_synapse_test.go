package federation_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// Regression tests for what broke when Synapse (1.163, the other implementation of issue 7's
// interoperability run, docs/federation.md "Interoperability") federated with us. Each pins the
// request or answer Synapse sent, as it sent it.

// synapseEscape escapes a path segment as Synapse does (urllib.parse.quote with safe=""): '!',
// ':', '@' and '$' too, which Go's url.PathEscape leaves alone.
func synapseEscape(s string) string {
	return strings.NewReplacer("!", "%21", ":", "%3A", "@", "%40", "$", "%24").Replace(url.PathEscape(s))
}

// TestSynapseEscapedPathParams: Synapse's /make_join/%21room%3Ahs1/%40bob%3Ahs2 was refused with
// 403 "The user is not on the requesting server" (the handler saw the escaped user ID), so no
// Synapse user could join our rooms; the other routes and the ACL guard saw escaped IDs too.
func TestSynapseEscapedPathParams(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		room := synapseEscape(sr.roomID)

		// make_join exactly as Synapse asked it (its ver list included).
		carol := "@carol:" + sr.name2
		path := "/_matrix/federation/v1/make_join/" + room + "/" + synapseEscape(carol) +
			"?ver=1&ver=2&ver=3&ver=4&ver=5&ver=6&ver=7&ver=8&ver=9&ver=10&ver=11&ver=12&ver=org.matrix.msc3757.10"
		var mj struct {
			RoomVersion string `json:"room_version"`
			Event       struct {
				RoomID   string `json:"room_id"`
				Sender   string `json:"sender"`
				StateKey string `json:"state_key"`
			} `json:"event"`
		}
		if err := sr.hs2.Federation.Client().DoJSON(context.Background(), sr.name1, "GET", path, nil, &mj); err != nil {
			t.Fatalf("make_join with an escaped path: %v", err)
		}
		if mj.RoomVersion == "" || mj.Event.RoomID != sr.roomID || mj.Event.Sender != carol || mj.Event.StateKey != carol {
			t.Fatalf("make_join template %+v", mj)
		}

		// A read naming the room and an event, both escaped.
		join := sr.bobS.rooms[sr.roomID][len(sr.bobS.rooms[sr.roomID])-1].EventID
		var ids struct {
			PDUIDs []string `json:"pdu_ids"`
		}
		if err := sr.hs2.Federation.Client().DoJSON(context.Background(), sr.name1, "GET",
			"/_matrix/federation/v1/state_ids/"+room+"?event_id="+url.QueryEscape(join), nil, &ids); err != nil || len(ids.PDUIDs) == 0 {
			t.Fatalf("state_ids with an escaped room ID: %v %v", ids, err)
		}
		var ev struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := sr.hs2.Federation.Client().DoJSON(context.Background(), sr.name1, "GET",
			"/_matrix/federation/v1/event/"+synapseEscape(join), nil, &ev); err != nil || len(ev.PDUs) != 1 {
			t.Fatalf("event with an escaped event ID: %v %v", ev, err)
		}

		// The ACL guard sees the unescaped room ID: a server it denies is refused either way.
		sr.setACL(t, sr.roomID, map[string]any{"allow": []string{"*"}, "deny": []string{ip2}})
		if st, code := fedStatus(t, sr.hs2, sr.name1, "GET", "/_matrix/federation/v1/state_ids/"+room+"?event_id="+url.QueryEscape(join), nil); st != 403 || code != "M_FORBIDDEN" {
			t.Fatalf("state_ids of a denied server with an escaped room ID: %d %s", st, code)
		}
	})
}

// TestSynapseProfileQueries: Synapse asks /query/profile?field=avatar_url of users without an
// avatar; the spec's answer is 200 without the field (404 is for unknown users), we answered 404.
// The other way, Synapse answers unset fields as null, which our client API must treat as unset.
func TestSynapseProfileQueries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		ca := servertest.NewCA(t)
		hs1 := servertest.Start(t, backend, servertest.Federated(t, ca, ip1))
		hs2 := servertest.Start(t, backend, servertest.Federated(t, ca, ip2))
		name1 := hs1.Config.ServerName
		alice := hs1.Register(t, "alice", "alice-password-1")
		q := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(alice.UserID)

		var got map[string]any
		if err := hs2.Federation.Client().DoJSON(ctx, name1, "GET", q+"&field=avatar_url", nil, &got); err != nil || len(got) != 0 {
			t.Fatalf("avatar_url of a user without one: %v %v, want 200 {}", got, err)
		}
		if err := hs2.Federation.Client().DoJSON(ctx, name1, "GET", q+"&field=displayname", nil, &got); err != nil || got["displayname"] != "alice" || len(got) != 1 {
			t.Fatalf("displayname: %v %v", got, err)
		}
		var fe *fedclient.Error
		_, err := hs2.Federation.Client().Do(ctx, name1, "GET", "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape("@nobody:"+name1)+"&field=avatar_url", nil)
		if !errors.As(err, &fe) || fe.Status != 404 || fe.Code != "M_NOT_FOUND" {
			t.Fatalf("a field of an unknown user: %v, want 404 M_NOT_FOUND", err)
		}
		_, err = hs2.Federation.Client().Do(ctx, name1, "GET", q+"&field=Not+A+Key", nil)
		if !errors.As(err, &fe) || fe.Status != 400 || fe.Code != "M_INVALID_PARAM" {
			t.Fatalf("an invalid field name: %v, want 400 M_INVALID_PARAM", err)
		}

		// Synapse's answer for a user without an avatar, from a stand-in for its listener.
		other := synapseProfileServer(t, ca, ip3, `{"displayname":"Bob","avatar_url":null}`)
		bob := "@bob:" + other
		carol := hs2.Register(t, "carol", "carol-password-1")
		res := hs2.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(bob), carol.AccessToken, nil)
		if _, has := res.JSON["avatar_url"]; res.Status != 200 || res.Str("displayname") != "Bob" || has {
			t.Fatalf("profile of a remote user with avatar_url null: %d %s", res.Status, res.Raw)
		}
		if res := hs2.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(bob)+"/avatar_url", carol.AccessToken, nil); res.Status != 404 || res.Errcode() != "M_NOT_FOUND" {
			t.Fatalf("avatar_url null of a remote user: %d %s, want 404 M_NOT_FOUND", res.Status, res.Raw)
		}
	})
}

// synapseProfileServer is a federation listener on ip that answers every /query/profile with
// body; it returns its server name.
func synapseProfileServer(t *testing.T, ca *servertest.CA, ip, body string) string {
	t.Helper()
	c, err := cert.Issue(ca.CertPEM, ca.KeyPEM, []string{ip})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/_matrix/federation/v1/query/profile" || !strings.HasPrefix(r.Header.Get("Authorization"), "X-Matrix ") {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
			return
		}
		_, _ = io.WriteString(w, body)
	}))
	s.Listener.Close()
	s.Listener = l
	s.TLS = &tls.Config{Certificates: []tls.Certificate{c}}
	s.StartTLS()
	t.Cleanup(s.Close)
	return l.Addr().String()
}

// TestSynapseRestrictedJoin: a user of another server joining a restricted room (v8+) of ours
// through a room they are in. make_join checked its unsigned template against rule 4.2 (signed by
// the authorising server) and refused every such join with 403; send_join then checked the
// signatures before adding ours and refused it with 400. Found with Synapse, broken between two of
// our servers as well.
func TestSynapseRestrictedJoin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		for _, version := range []string{"8", "10"} {
			res := sr.hs1.Do(t, "POST", "/_matrix/client/v3/createRoom", sr.alice.AccessToken, map[string]any{
				"preset": "private_chat", "room_version": version,
				"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
					"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": sr.roomID}}}}},
			})
			if res.Status != 200 {
				t.Fatalf("createRoom v%s: %d %s", version, res.Status, res.Raw)
			}
			restricted := res.Str("room_id")
			join := func(u servertest.User) servertest.Response {
				return sr.hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(restricted)+"?via="+url.QueryEscape(sr.name1), u.AccessToken, map[string]any{})
			}
			// carol is in no room the rule allows: refused.
			carol := sr.hs2.Register(t, "carol"+version, "carol-password-1")
			if res := join(carol); res.Status != 403 || res.Errcode() != "M_FORBIDDEN" {
				t.Fatalf("v%s: carol's join: %d %s, want 403", version, res.Status, res.Raw)
			}
			// bob is in the allowed room: joined, authorised by alice, signed by hs1.
			if res := join(sr.bob); res.Status != 200 || res.Str("room_id") != restricted {
				t.Fatalf("v%s: bob's join of a restricted room: %d %s", version, res.Status, res.Raw)
			}
			var member struct {
				Membership string `json:"membership"`
				Via        string `json:"join_authorised_via_users_server"`
			}
			servertest.Eventually(t, 20*time.Second, func() error {
				res := sr.hs1.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(restricted)+"/state/m.room.member/"+url.PathEscape(sr.bob.UserID), sr.alice.AccessToken, nil)
				if res.Status != 200 || json.Unmarshal(res.Raw, &member) != nil || member.Membership != "join" {
					return fmt.Errorf("bob's membership on hs1: %d %s", res.Status, res.Raw)
				}
				return nil
			})
			if member.Via != sr.alice.UserID {
				t.Fatalf("v%s: join_authorised_via_users_server %q, want %s", version, member.Via, sr.alice.UserID)
			}
		}
	})
}

// TestRemoteAliasLookup: GET /directory/room/{alias} of another server's alias asks that server
// (it answered 404 "cannot be resolved yet", while joins by such an alias worked; found looking
// up Synapse's aliases).
func TestRemoteAliasLookup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		sr := newSharedRoom(t, backend, "")
		alias := "#lobby:" + sr.name1
		if res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), sr.alice.AccessToken,
			map[string]any{"room_id": sr.roomID}); res.Status != 200 {
			t.Fatalf("PUT alias: %d %s", res.Status, res.Raw)
		}
		res := sr.hs2.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), sr.bob.AccessToken, nil)
		var got struct {
			RoomID  string   `json:"room_id"`
			Servers []string `json:"servers"`
		}
		if res.Status != 200 || json.Unmarshal(res.Raw, &got) != nil || got.RoomID != sr.roomID {
			t.Fatalf("remote alias: %d %s", res.Status, res.Raw)
		}
		seen := map[string]bool{}
		for _, s := range got.Servers {
			if seen[s] {
				t.Fatalf("servers %v: %s twice", got.Servers, s)
			}
			seen[s] = true
		}
		if !seen[sr.name1] || !seen[sr.name2] {
			t.Fatalf("servers %v, want %s and %s", got.Servers, sr.name1, sr.name2)
		}
		if res := sr.hs2.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#nope:"+sr.name1), sr.bob.AccessToken, nil); res.Status != 404 || res.Errcode() != "M_NOT_FOUND" {
			t.Fatalf("unknown remote alias: %d %s, want 404 M_NOT_FOUND", res.Status, res.Raw)
		}
	})
}
