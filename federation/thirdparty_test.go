package federation_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// identityServer stands for an identity server: its key signs the "signed" objects of bound
// third-party invites.
type identityServer struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newIdentityServer(t *testing.T) identityServer {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return identityServer{pub, priv}
}

// signed is the object an identity server hands over when mxid binds the address invited with
// token.
func (is identityServer) signed(t *testing.T, mxid, token string) json.RawMessage {
	raw, _ := json.Marshal(map[string]string{"mxid": mxid, "token": token})
	out, err := event.SignJSON(raw, "is.example", "ed25519:0", is.priv)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFederatedThirdPartyInvites: alice@hs1's room holds m.room.third_party_invite events (sent
// as state, as an identity-server-aware client would); when the identity server tells hs2 that
// bob bound the address (/3pid/onbind), hs2 exchanges the invite with hs1
// (exchange_third_party_invite) and bob is invited, then joins; for carol@hs1 (in-room server)
// hs1 sends the invite itself; forged or misdirected exchanges are refused.
func TestFederatedThirdPartyInvites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		ca, hs1, hs2, alice, bob := p.ca, p.hs1, p.hs2, p.alice, p.bob
		name1, name2 := hs1.Config.ServerName, hs2.Config.ServerName
		carol := hs1.Register(t, "carol", "carol-password-1")
		is := newIdentityServer(t)
		aliceS, bobS := newSyncer(hs1, alice), newSyncer(hs2, bob)

		roomID := createRoom(t, hs1, alice, map[string]any{"preset": "private_chat", "name": "Invited by mail"})
		pub := base64.RawStdEncoding.EncodeToString(is.pub)
		for token, display := range map[string]string{"tok-bob": "b...@example.org", "tok-carol": "c...@example.org"} {
			res := hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.third_party_invite/"+token, alice.AccessToken,
				map[string]any{"display_name": display, "key_validity_url": "https://is.example/_matrix/identity/v2/pubkey/isvalid",
					"public_key": pub, "public_keys": []map[string]string{{"public_key": pub}}})
			if res.Status != 200 {
				t.Fatalf("m.room.third_party_invite: %d %s", res.Status, res.Raw)
			}
		}
		onBind := func(hs *servertest.Server, mxid, address, token string) servertest.Response {
			body, _ := json.Marshal(map[string]any{"medium": "email", "address": address, "mxid": mxid,
				"invites": []map[string]any{{"medium": "email", "address": address, "mxid": mxid, "room_id": roomID,
					"sender": alice.UserID, "signed": is.signed(t, mxid, token)}}})
			return fedDo(t, ca, hs, "PUT", "/_matrix/federation/v1/3pid/onbind", body, "")
		}

		// bob@hs2: hs2 is not in the room and exchanges the invite with hs1.
		if r := onBind(hs2, bob.UserID, "bob@example.org", "tok-bob"); r.Status != 200 {
			t.Fatalf("onbind: %d %s", r.Status, r.Raw)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !hasMember(bobS.invites[roomID], bob.UserID, "invite") {
			if time.Now().After(deadline) {
				t.Fatalf("bob's invite: %s", describeState(bobS.invites[roomID]))
			}
			bobS.once(t, 500)
		}
		for _, e := range bobS.invites[roomID] {
			if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == bob.UserID {
				var c struct {
					ThirdPartyInvite struct {
						DisplayName string `json:"display_name"`
						Signed      struct {
							Token string `json:"token"`
						} `json:"signed"`
					} `json:"third_party_invite"`
				}
				_ = json.Unmarshal(e.Content, &c)
				if e.Sender != alice.UserID || c.ThirdPartyInvite.DisplayName != "b...@example.org" || c.ThirdPartyInvite.Signed.Token != "tok-bob" {
					t.Errorf("bob's invite: sender %s, content %s", e.Sender, e.Content)
				}
			}
		}
		if res := hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", bob.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("bob joins: %d %s", res.Status, res.Raw)
		}
		aliceS.waitFor(t, roomID, "bob's join", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "join") })

		// carol@hs1: hs1 is in the room and sends the invite itself.
		if r := onBind(hs1, carol.UserID, "carol@example.org", "tok-carol"); r.Status != 200 {
			t.Fatalf("onbind of carol: %d %s", r.Status, r.Raw)
		}
		aliceS.waitFor(t, roomID, "carol's invite", func(evs []timelineEvent) bool { return hasMember(evs, carol.UserID, "invite") })

		// Exchanges hs1 refuses.
		exchange := func(roomID, sender, target, token string, signed json.RawMessage, typ string) servertest.Response {
			if signed == nil {
				signed = is.signed(t, target, token)
			}
			body, _ := json.Marshal(map[string]any{"type": typ, "room_id": roomID, "sender": sender, "state_key": target,
				"content": map[string]any{"membership": "invite", "third_party_invite": map[string]any{"display_name": "x", "signed": signed}}})
			return signedFedDo(t, ca, hs2, hs1, "PUT", "/_matrix/federation/v1/exchange_third_party_invite/"+url.PathEscape(roomID), body)
		}
		other := identityServer{}
		other.pub, other.priv, _ = ed25519.GenerateKey(rand.Reader)
		dave := "@dave:" + name2
		for _, c := range []struct {
			name                        string
			room, sender, target, token string
			signed                      json.RawMessage
			typ                         string
			status                      int
			errcode                     string
		}{
			{"signed by another key", roomID, alice.UserID, dave, "tok-bob", other.signed(t, dave, "tok-bob"), "m.room.member", 403, "M_FORBIDDEN"},
			{"unknown token", roomID, alice.UserID, dave, "tok-nope", nil, "m.room.member", 403, "M_FORBIDDEN"},
			{"not the third-party invite's sender", roomID, carol.UserID, dave, "tok-bob", nil, "m.room.member", 403, "M_FORBIDDEN"},
			{"invitee not on the requesting server", roomID, alice.UserID, "@erin:" + name1, "tok-bob", nil, "m.room.member", 403, "M_FORBIDDEN"},
			{"sender not on this server", roomID, dave, dave, "tok-bob", nil, "m.room.member", 403, "M_FORBIDDEN"},
			{"signed for another user", roomID, alice.UserID, dave, "tok-bob", is.signed(t, bob.UserID, "tok-bob"), "m.room.member", 400, "M_INVALID_PARAM"},
			{"not a member event", roomID, alice.UserID, dave, "tok-bob", nil, "m.room.message", 400, "M_INVALID_PARAM"},
			{"unknown room", "!nope:" + name1, alice.UserID, dave, "tok-bob", nil, "m.room.member", 404, "M_NOT_FOUND"},
		} {
			if r := exchange(c.room, c.sender, c.target, c.token, c.signed, c.typ); r.Status != c.status || r.Errcode() != c.errcode {
				t.Errorf("exchange, %s: %d %s", c.name, r.Status, r.Raw)
			}
		}

		// /3pid/onbind's own checks (it is unauthenticated).
		for _, c := range []struct {
			name, body string
			status     int
			errcode    string
		}{
			{"not JSON", "{", 400, "M_BAD_JSON"},
			{"no invites", `{"medium":"email","address":"a@example.org","mxid":"` + bob.UserID + `"}`, 400, "M_MISSING_PARAM"},
			{"user of another server", `{"medium":"email","address":"a@example.org","mxid":"@x:` + name1 + `","invites":[]}`, 400, "M_INVALID_PARAM"},
			{"unknown user", `{"medium":"email","address":"a@example.org","mxid":"@nobody:` + name2 + `","invites":[]}`, 404, "M_NOT_FOUND"},
		} {
			if r := fedDo(t, ca, hs2, "PUT", "/_matrix/federation/v1/3pid/onbind", []byte(c.body), ""); r.Status != c.status || r.Errcode() != c.errcode {
				t.Errorf("onbind, %s: %d %s", c.name, r.Status, r.Raw)
			}
		}
	})
}
