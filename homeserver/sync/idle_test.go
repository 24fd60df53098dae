package sync_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// TestLongPollWokenByMemoryStreams: a long poll whose token is current parks without building a
// response, and a change of a stream kept in memory (presence, typing) still ends it at once, not
// at its timeout.
func TestLongPollWokenByMemoryStreams(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		for _, c := range []struct {
			name   string
			change func()
			seen   func(ephSync) bool
		}{
			{"presence", func() {
				must(t, "set presence", s.Do(t, "PUT", presencePath(alice.UserID), alice.AccessToken, map[string]any{"presence": "online"}))
			}, func(r ephSync) bool { return r.presenceOf(alice.UserID) != nil }},
			{"typing", func() {
				must(t, "typing", s.Do(t, "PUT", typingPath(roomID, alice.UserID), alice.AccessToken, map[string]any{"typing": true, "timeout": 30000}))
			}, func(r ephSync) bool { users, _ := r.typingIn(roomID); return len(users) == 1 }},
		} {
			start := ephDo(t, s, bob, "set_presence", "offline")
			got := make(chan ephSync, 1)
			began := time.Now()
			go func() {
				got <- ephDo(t, s, bob, "since", start.NextBatch, "timeout", "20000", "set_presence", "offline")
			}()
			servertest.Eventually(t, 5*time.Second, func() error {
				if s.Sync.Waiting() == 0 {
					return fmt.Errorf("%s: the long poll is not parked", c.name)
				}
				return nil
			})
			c.change()
			select {
			case r := <-got:
				if !c.seen(r) {
					t.Errorf("%s: the long poll ended without the change: %+v", c.name, r)
				}
				if d := time.Since(began); d > 10*time.Second {
					t.Errorf("%s: the long poll ended after %v, at its timeout", c.name, d)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: the long poll did not end", c.name)
			}
		}
	})
}

// TestLongPollWokenForOthers: a long poll woken by news its filter leaves out (typing, with no
// ephemeral events asked for) builds an empty response, does not return it, and waits again from
// where that build saw the streams: the next relevant event ends it at once, and alone.
func TestLongPollWokenForOthers(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := twoInRoom(t, s)
		filter := `{"room":{"ephemeral":{"types":[]}},"presence":{"types":[]}}`
		start := ephDo(t, s, bob, "filter", filter, "set_presence", "offline")
		got := make(chan syncResp, 1)
		began := time.Now()
		go func() {
			got <- doSync(t, s, bob, "filter", filter, "since", start.NextBatch, "timeout", "20000", "set_presence", "offline")
		}()
		waitParked(t, s, 1)
		builds := hsync.Builds(s.Sync)
		must(t, "typing", s.Do(t, "PUT", typingPath(roomID, alice.UserID), alice.AccessToken, map[string]any{"typing": true, "timeout": 30000}))
		// Woken, built nothing for bob, and parked again.
		servertest.Eventually(t, 5*time.Second, func() error {
			if hsync.Builds(s.Sync) == builds || s.Sync.Waiting() != 1 {
				return fmt.Errorf("builds %d -> %d, %d parked", builds, hsync.Builds(s.Sync), s.Sync.Waiting())
			}
			return nil
		})
		select {
		case r := <-got:
			t.Fatalf("the long poll returned news it had filtered out: %+v", r)
		case <-time.After(200 * time.Millisecond):
		}
		id := send(t, s, alice, roomID, "for bob")
		select {
		case r := <-got:
			evs := r.Rooms.Join[roomID].Timeline.Events
			if len(evs) != 1 || evs[0].EventID != id {
				t.Errorf("woken with %+v, want only %s", evs, id)
			}
			if eph := r.Rooms.Join[roomID].Ephemeral; eph != nil && len(eph.Events) != 0 {
				t.Errorf("filtered-out typing delivered: %+v", eph.Events)
			}
			if d := time.Since(began); d > 10*time.Second {
				t.Errorf("the long poll ended after %v, at its timeout", d)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the long poll did not end on the message")
		}
	})
}
