package federation_test

import (
	"net/url"
	"testing"
)

// An invite whose server is gone can still be rejected: the leave is recorded on this server only
// (an out-of-band leave), and the invite leaves the user's /sync.
func TestRejectInviteFromUnreachableServer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		bobS := newSyncer(hs2, bob)
		bobS.once(t, 0)
		roomID := createRoom(t, hs1, alice, map[string]any{"preset": "private_chat", "name": "Soon gone", "invite": []string{bob.UserID}})
		bobS.waitUntil(t, "the invite", func() bool { return bobS.invites[roomID] != nil })
		hs1.Stop()

		leave := hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", bob.AccessToken,
			map[string]any{"reason": "no thanks"})
		if leave.Status != 200 {
			t.Fatalf("rejecting the invite of a server that is down: %d %s", leave.Status, leave.Raw)
		}
		bobS.waitUntil(t, "the room in rooms.leave", func() bool { return bobS.left[roomID] })
		if bobS.invites[roomID] != nil {
			t.Error("the invite is still in bob's /sync")
		}
		// Rejecting again: nothing to reject any more.
		again := hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", bob.AccessToken, map[string]any{})
		if again.Status != 403 || again.Errcode() != "M_FORBIDDEN" {
			t.Errorf("second leave: %d %s, want 403 M_FORBIDDEN", again.Status, again.Raw)
		}
	})
}
