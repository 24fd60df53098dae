package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// TestSharedRoomSection: a response built from a shared room section is, byte for byte, the one
// the per-user path builds, for users in every situation: the sender (transaction_id), another
// device of the sender, a user who joined inside the range, users with other filters (limited
// timeline, state delta, type filter), lazy-loading devices with and without the senders' member
// events, a room whose events have bundled relations; and the users who fit share it.
func TestSharedRoomSection(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		ctx := context.Background()
		reg := func(name string) servertest.User { return s.Register(t, name, "password-"+name) }
		alice, bob, carol, dave, erin, frank, lazy := reg("alice"), reg("bob"), reg("carol"), reg("dave"), reg("erin"), reg("frank"), reg("lazy")
		roomID := newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
		for _, u := range []servertest.User{bob, carol, dave, erin, lazy} {
			membership(t, s, u, roomID, "join", nil)
		}
		aliceOther := s.Login(t, "alice", "password-alice")
		lazyOther := s.Login(t, "lazy", "password-lazy")

		const (
			plain    = `{"room":{"timeline":{"limit":10}}}`
			limitOne = `{"room":{"timeline":{"limit":1}}}`
			messages = `{"room":{"timeline":{"types":["m.room.message"]}}}`
			lazyLoad = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":10}}}`
		)
		// The lazy-loading device gets alice's member event with her first message (its initial
		// timeline of one event is its own join).
		lazyOne := `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`
		r0 := doSync(t, s, lazy, "filter", lazyOne)
		send(t, s, alice, roomID, "m1")
		r1 := doSync(t, s, lazy, "filter", lazyOne, "since", r0.NextBatch, "timeout", "5000")
		if findState(r1.Rooms.Join[roomID].State.Events, "m.room.member", alice.UserID) == nil {
			t.Fatalf("lazy loading: alice's member event not sent with m1")
		}

		type syncer struct {
			name   string
			u      servertest.User
			filter string
			shared bool // expected to get the shared section
			peeked bool // ... built by an earlier one, without reading the room's events
		}
		// compare syncs each from since with and without shared sections and wants the same bytes
		// (ages aside: they are taken when a response is built). It returns the next token.
		compare := func(t *testing.T, since string, who []syncer) string {
			t.Helper()
			var next string
			for _, w := range who {
				f, err := filter.Parse([]byte(w.filter))
				if err != nil {
					t.Fatal(err)
				}
				req := hsync.Request{UserID: w.u.UserID, Localpart: w.u.Localpart, DeviceID: w.u.DeviceID, Since: since, Filter: f}
				hsync.SetSharing(s.Sync, true)
				before, reads := hsync.SharedUses(s.Sync), hsync.TimelineReads(s.Sync)
				shared, err := s.Sync.Sync(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if got := hsync.SharedUses(s.Sync) > before; got != w.shared {
					t.Errorf("%s: shared section used %v, want %v", w.name, got, w.shared)
				}
				if got := hsync.TimelineReads(s.Sync) == reads; w.peeked && !got {
					t.Errorf("%s: read the room's events for a section already built", w.name)
				}
				hsync.SetSharing(s.Sync, false)
				own, err := s.Sync.Sync(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				a, b := noAge(shared.AppendJSON(nil)), noAge(own.AppendJSON(nil))
				if !bytes.Equal(a, b) {
					t.Errorf("%s: shared section response differs from the user's own:\nshared: %s\nown:    %s", w.name, a, b)
				}
				if m, err := json.Marshal(shared); err != nil || !bytes.Equal(noAge(m), a) {
					t.Errorf("%s: shared response: encoding/json gives %s (%v)", w.name, m, err)
				}
				if len(shared.Rooms.Join[roomID].Timeline.Events) == 0 {
					t.Errorf("%s: no timeline: %s", w.name, a)
				}
				next = shared.NextBatch
			}
			hsync.SetSharing(s.Sync, true)
			return next
		}

		// A: one message of alice's, with a transaction ID.
		send(t, s, alice, roomID, "m2")
		t2 := compare(t, r1.NextBatch, []syncer{
			{"bob", bob, plain, true, false},
			{"dave, same filter", dave, plain, true, true},
			{"alice, the sender", alice, plain, false, false},
			{"alice's other device", aliceOther, plain, true, true},
			{"carol, limit 1", carol, limitOne, true, false},
			{"erin, messages only", erin, messages, true, false},
			{"lazy, has alice's member event", lazy, lazyLoad, true, false},
			{"lazy's other device, has not", lazyOther, lazyLoad, false, false},
		})

		// B: frank joins, alice and bob send.
		membership(t, s, frank, roomID, "join", nil)
		send(t, s, alice, roomID, "m3")
		send(t, s, bob, roomID, "m4")
		t3 := compare(t, t2, []syncer{
			{"dave (room summary)", dave, plain, true, false},
			{"frank, joined inside the range", frank, plain, false, false},
			{"bob, a sender", bob, plain, false, false},
			{"alice's other device", aliceOther, plain, true, true},
			{"carol, limited with a state delta", carol, limitOne, true, false},
			{"erin, frank's join left out of the timeline", erin, messages, true, false},
			{"lazy, has not frank's and bob's member events", lazy, lazyLoad, false, false},
		})

		// C: a message and its edit: bundled relations depend on the reader.
		id := send(t, s, alice, roomID, "m5")
		must(t, "edit", s.Do(t, "PUT", roomPath(roomID, fmt.Sprintf("/send/m.room.message/e%d", txn.Add(1))), alice.AccessToken,
			map[string]any{"msgtype": "m.text", "body": "* m5'", "m.new_content": map[string]any{"msgtype": "m.text", "body": "m5'"},
				"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": id}}))
		compare(t, t3, []syncer{
			{"dave, edited message", dave, plain, false, false},
			{"carol, only the edit in her timeline (no bundle)", carol, limitOne, true, false},
		})
	}, func(c *config.Config) { c.Presence.Enabled = false })
}

var ageRE = regexp.MustCompile(`"age":[0-9]+`)

func noAge(b []byte) []byte { return ageRE.ReplaceAll(b, []byte(`"age":0`)) }
