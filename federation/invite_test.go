package federation_test

import (
	"net/url"
	"testing"
)

// TestFederatedInvites: alice@hs1 invites bob@hs2 to private rooms; bob sees each invite (with
// the room's name) in /sync, accepts one (a join through hs1) and rejects the other (a leave
// through make_leave/send_leave).
func TestFederatedInvites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		aliceS, bobS := newSyncer(hs1, alice), newSyncer(hs2, bob)
		bobS.once(t, 0)

		create := func(name string, invite bool) string {
			body := map[string]any{"preset": "private_chat", "name": name}
			if invite {
				body["invite"] = []string{bob.UserID}
			}
			return createRoom(t, hs1, alice, body)
		}
		// One invite at creation, one with /invite.
		accept := create("To accept", true)
		reject := create("To reject", false)
		if res := hs1.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(reject)+"/invite", alice.AccessToken,
			map[string]any{"user_id": bob.UserID}); res.Status != 200 {
			t.Fatalf("invite: %d %s", res.Status, res.Raw)
		}
		bobS.waitUntil(t, "both invites", func() bool { return len(bobS.invites) >= 2 })
		for id, name := range map[string]string{accept: "To accept", reject: "To reject"} {
			found := false
			for _, e := range bobS.invites[id] {
				if e.Type == "m.room.name" && string(e.Content) == `{"name":"`+name+`"}` {
					found = true
				}
			}
			if !found || !hasMember(bobS.invites[id], bob.UserID, "invite") {
				t.Errorf("invite state of %s: %s", name, describe(bobS.invites[id]))
			}
		}

		// Accept: bob joins (through the inviter's server, found from the invite).
		if res := hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(accept)+"/join", bob.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("join after invite: %d %s", res.Status, res.Raw)
		}
		aliceS.waitFor(t, accept, "bob's join", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "join") })
		sendText(t, hs1, alice, accept, "welcome")
		bobS.waitFor(t, accept, "alice's welcome", func(evs []timelineEvent) bool { return len(messagesFrom(evs, alice.UserID)) == 1 })

		// Reject: bob leaves a room his server is not in.
		if res := hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(reject)+"/leave", bob.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("reject invite: %d %s", res.Status, res.Raw)
		}
		aliceS.waitFor(t, reject, "bob's rejection", func(evs []timelineEvent) bool { return hasMember(evs, bob.UserID, "leave") })
		bobS.waitUntil(t, "the rejected room in rooms.leave", func() bool { return bobS.left[reject] })
		if _, ok := bobS.invites[reject]; ok {
			t.Errorf("the rejected invite is still shown")
		}
	})
}

// TestJoinByRemoteAlias: bob@hs2 joins #lobby:hs1 (resolved with /query/directory); joining an
// invite-only room without an invite is refused with hs1's M_FORBIDDEN.
func TestJoinByRemoteAlias(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		roomID := createRoom(t, hs1, alice, map[string]any{"preset": "public_chat", "room_alias_name": "lobby"})
		alias := "#lobby:" + hs1.Config.ServerName
		join := hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), bob.AccessToken, map[string]any{})
		if join.Status != 200 || join.Str("room_id") != roomID {
			t.Fatalf("join by alias: %d %s", join.Status, join.Raw)
		}
		if m := hs1.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", alice.AccessToken, nil); m.Status != 200 ||
			m.JSON["joined"].(map[string]any)[bob.UserID] == nil {
			t.Fatalf("hs1's members: %s", m.Raw)
		}

		priv := hs1.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"preset": "private_chat"})
		refused := hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(priv.Str("room_id")), bob.AccessToken, map[string]any{})
		if refused.Status != 403 || refused.Errcode() != "M_FORBIDDEN" {
			t.Fatalf("join of an invite-only room: %d %s", refused.Status, refused.Raw)
		}
		unknown := hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape("#nope:"+hs1.Config.ServerName), bob.AccessToken, map[string]any{})
		if unknown.Status != 404 || unknown.Errcode() != "M_NOT_FOUND" {
			t.Fatalf("join of an unknown alias: %d %s", unknown.Status, unknown.Raw)
		}
	})
}
