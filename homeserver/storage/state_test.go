package storage_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestStateGroupDeltas builds a chain of state groups longer than the snapshot threshold, each
// adding or replacing or removing one key, and checks every group reads back as the full state
// it stands for.
func TestStateGroupDeltas(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		want := storage.StateMap{}
		var prev int64
		expected := map[int64]storage.StateMap{}
		for i := 0; i < 150; i++ {
			delta := storage.StateMap{}
			switch {
			case i%10 == 9: // remove a key added earlier
				k := storage.StateKey{Type: "m.room.member", StateKey: fmt.Sprintf("@u%d:x", i-5)}
				delta[k] = ""
				delete(want, k)
			case i%3 == 2: // replace the topic
				k := storage.StateKey{Type: "m.room.topic"}
				delta[k] = fmt.Sprintf("$topic%d", i)
				want[k] = delta[k]
			default:
				k := storage.StateKey{Type: "m.room.member", StateKey: fmt.Sprintf("@u%d:x", i)}
				delta[k] = fmt.Sprintf("$m%d", i)
				want[k] = delta[k]
			}
			full := storage.StateMap{}
			for k, v := range want {
				full[k] = v
			}
			err := s.Write(ctx, func(c storage.Conn) error {
				var err error
				prev, err = c.CreateStateGroup(ctx, "!r:x", prev, delta, full)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			expected[prev] = full
		}
		for g, full := range expected {
			got, err := s.Read().StateGroup(ctx, g)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, full) {
				t.Fatalf("group %d: got %d entries, want %d", g, len(got), len(full))
			}
		}
		// Deltas are stored, not copies: rows stay well under groups x state size.
		var rows int
		if err := s.Write(ctx, func(c storage.Conn) error {
			var err error
			rows, err = c.CountStateEntries(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if rows > 600 {
			t.Fatalf("%d state entries stored for 150 groups: state is being copied", rows)
		}
	})
}
