package federation_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// A room joined over federation starts its timeline at the join (after the invite, if any, which
// has no room state of its own); /sync must still give the client the room's state before it (the
// state that came with send_join), in an initial sync and in the incremental sync where the room
// appears, or clients know neither the other members nor, say, that the room is encrypted.
func TestRemoteJoinedRoomSyncHasState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		p := newFedPair(t, backend, fastRetry)
		hs1, hs2, alice, bob := p.hs1, p.hs2, p.alice, p.bob
		since := syncState(t, hs2, bob, "", "")

		for _, invite := range []bool{false, true} {
			body := map[string]any{"preset": "public_chat", "name": "Public"}
			if invite {
				body = map[string]any{"preset": "private_chat", "name": "Invited", "invite": []string{bob.UserID},
					"initial_state": []any{map[string]any{"type": "m.room.encryption", "state_key": "",
						"content": map[string]string{"algorithm": "m.megolm.v1.aes-sha2"}}}}
			}
			roomID := createRoom(t, hs1, alice, body)
			if invite {
				servertest.Eventually(t, 20*time.Second, func() error {
					var s struct {
						Rooms struct {
							Invite map[string]json.RawMessage `json:"invite"`
						} `json:"rooms"`
					}
					syncOnce(t, hs2, bob, "", "", 0, &s)
					if s.Rooms.Invite[roomID] == nil {
						return fmt.Errorf("bob is not invited yet")
					}
					return nil
				})
			}
			joinVia(t, hs2, bob, roomID, hs1.Config.ServerName)
			want := []string{"m.room.create|", "m.room.power_levels|", "m.room.join_rules|",
				"m.room.member|" + alice.UserID, "m.room.member|" + bob.UserID}
			if invite {
				want = append(want, "m.room.encryption|")
			}
			syncState(t, hs2, bob, since, roomID, want...) // incremental: the room appears
			syncState(t, hs2, bob, "", roomID, want...)    // initial
		}
	})
}

// syncState runs a /sync from since and checks that the state and timeline of roomID in it hold
// the state events want ("type|state_key"); it returns next_batch.
func syncState(t *testing.T, hs *servertest.Server, u servertest.User, since, roomID string, want ...string) string {
	t.Helper()
	var body struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				State struct {
					Events []timelineEvent `json:"events"`
				} `json:"state"`
				Timeline struct {
					Events []timelineEvent `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	syncOnce(t, hs, u, since, "", 0, &body)
	if roomID == "" {
		return body.NextBatch
	}
	r, ok := body.Rooms.Join[roomID]
	if !ok {
		t.Fatalf("the room is not in rooms.join of the sync from %q; rooms.join has %d rooms", since, len(body.Rooms.Join))
	}
	has := map[string]bool{}
	for _, e := range append(r.State.Events, r.Timeline.Events...) {
		if e.StateKey != nil {
			has[e.Type+"|"+*e.StateKey] = true
		}
	}
	for _, w := range want {
		if !has[w] {
			t.Errorf("the sync from %q lacks %s; state %s", since, w, describe(r.State.Events))
		}
	}
	return body.NextBatch
}
