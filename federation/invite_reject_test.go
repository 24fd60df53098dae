package federation_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// An invite whose server is gone can still be rejected: the leave is recorded on this server only
// (an out-of-band leave), and the invite leaves the user's /sync.
func TestRejectInviteFromUnreachableServer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ca := servertest.NewCA(t)
		hs1 := servertest.Start(t, backend, servertest.Federated(t, ca, ip1), fastRetry)
		hs2 := servertest.Start(t, backend, servertest.Federated(t, ca, ip2), fastRetry)
		alice := hs1.Register(t, "alice", "alice-password-1")
		bob := hs2.Register(t, "bob", "bob-password-12")
		bobS := newSyncer(hs2, bob)
		bobS.once(t, 0)
		res := hs1.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken,
			map[string]any{"preset": "private_chat", "name": "Soon gone", "invite": []string{bob.UserID}})
		if res.Status != 200 {
			t.Fatalf("createRoom: %d %s", res.Status, res.Raw)
		}
		roomID := res.Str("room_id")
		deadline := time.Now().Add(20 * time.Second)
		for bobS.invites[roomID] == nil {
			if time.Now().After(deadline) {
				t.Fatal("bob was not invited")
			}
			bobS.once(t, 500)
		}
		hs1.Stop()

		leave := hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", bob.AccessToken,
			map[string]any{"reason": "no thanks"})
		if leave.Status != 200 {
			t.Fatalf("rejecting the invite of a server that is down: %d %s", leave.Status, leave.Raw)
		}
		deadline = time.Now().Add(10 * time.Second)
		for !bobS.left[roomID] {
			if time.Now().After(deadline) {
				t.Fatalf("the room is not in bob's rooms.leave; invites %v", bobS.invites)
			}
			bobS.once(t, 500)
		}
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
