package storage_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestLargeStateWrites writes a first state group and a current state of many more entries than
// one statement takes, and reads both back whole; then SetCurrentStates replaces, removes and
// adds entries of that current state, memberships included.
func TestLargeStateWrites(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		const n = 1000
		full := storage.StateMap{{Type: "m.room.create"}: "$create"}
		rows := []storage.CurrentStateRow{{Key: storage.StateKey{Type: "m.room.create"}, EventID: "$create"}}
		for i := range n {
			k := storage.StateKey{Type: "m.room.member", StateKey: fmt.Sprintf("@u%04d:x", i)}
			full[k] = fmt.Sprintf("$m%d", i)
			rows = append(rows, storage.CurrentStateRow{Key: k, EventID: full[k], Membership: "join"})
		}
		var group int64
		err := s.Write(ctx, func(c storage.Conn) error {
			var err error
			// A removal in the delta of a first group is not written (nothing to remove).
			delta := storage.StateMap{{Type: "m.room.topic"}: ""}
			for k, v := range full {
				delta[k] = v
			}
			if group, err = c.CreateStateGroup(ctx, "!r:x", 0, delta, full); err != nil {
				return err
			}
			return c.SetCurrentStates(ctx, "!r:x", rows, 7)
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Read().StateGroup(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, full) {
			t.Fatalf("state group: %d entries, want %d", len(got), len(full))
		}
		n2, err := s.Read().CountStateEntries(ctx)
		if err != nil || n2 != len(full) {
			t.Fatalf("state group rows: %d, %v; want %d", n2, err, len(full))
		}
		cur, err := s.Read().CurrentState(ctx, "!r:x")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cur, full) {
			t.Fatalf("current state: %d entries, want %d", len(cur), len(full))
		}

		// u0000 leaves, u0001 is removed, a topic appears.
		change := []storage.CurrentStateRow{
			{Key: storage.StateKey{Type: "m.room.member", StateKey: "@u0000:x"}, EventID: "$leave0", Membership: "leave"},
			{Key: storage.StateKey{Type: "m.room.member", StateKey: "@u0001:x"}},
			{Key: storage.StateKey{Type: "m.room.topic"}, EventID: "$topic"},
		}
		if err := s.Write(ctx, func(c storage.Conn) error { return c.SetCurrentStates(ctx, "!r:x", change, 9) }); err != nil {
			t.Fatal(err)
		}
		joined, err := s.Read().RoomMembers(ctx, "!r:x", "join")
		if err != nil {
			t.Fatal(err)
		}
		if len(joined) != n-2 || joined[0].UserID != "@u0002:x" || joined[0].StreamPos != 7 {
			t.Fatalf("joined members: %d, first %+v", len(joined), joined[0])
		}
		left, err := s.Read().RoomMembers(ctx, "!r:x", "leave")
		if err != nil {
			t.Fatal(err)
		}
		if len(left) != 1 || left[0].EventID != "$leave0" || left[0].StreamPos != 9 {
			t.Fatalf("left members: %+v", left)
		}
		if id, err := s.Read().CurrentStateEvent(ctx, "!r:x", "m.room.topic", ""); err != nil || id != "$topic" {
			t.Fatalf("topic: %q, %v", id, err)
		}
		if _, err := s.Read().CurrentStateEvent(ctx, "!r:x", "m.room.member", "@u0001:x"); err != storage.ErrNotFound {
			t.Fatalf("removed member: %v", err)
		}
	})
}
