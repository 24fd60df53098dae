package room_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestOnBatch: the writer reports each pipelined batch of plain messages with its positions and
// events, exactly the messages; a member event is in none of them, and its serial transaction is
// reported (before it starts).
func TestOnBatch(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		alice, bob := "@alice:test.local", "@bob:test.local"
		svc, roomID := serviceWithRoom(t, s, room.CreateRequest{Creator: alice, Preset: room.PresetPublicChat})
		var mu sync.Mutex
		var ranges [][2]int64
		var reported []string
		serial := 0
		svc.OnBatch(func(b room.Batch) {
			mu.Lock()
			defer mu.Unlock()
			if b.Last == 0 {
				serial++
				return
			}
			ranges = append(ranges, [2]int64{b.After, b.Last})
			for i, e := range b.Events {
				if e.StreamPos != b.After+int64(i)+1 {
					t.Errorf("event %d of batch (%d, %d] at %d", i, b.After, b.Last, e.StreamPos)
				}
				reported = append(reported, e.EventID)
			}
		})
		ids, err := sendConcurrently(svc, roomID, alice, 4, 10)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Join(ctx, roomID, senderOf(bob, "j"), room.MemberProfile{}, ""); err != nil {
			t.Fatal(err)
		}
		evs, err := s.Read().Events(ctx, ids)
		if err != nil || len(evs) != len(ids) {
			t.Fatalf("events: %d, %v", len(evs), err)
		}
		var want []int64
		for _, e := range evs {
			want = append(want, e.StreamPos)
		}
		slices.Sort(want)
		mu.Lock()
		defer mu.Unlock()
		var got []int64
		for _, r := range ranges {
			for p := r[0] + 1; p <= r[1]; p++ {
				got = append(got, p)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("positions reported %v, want the messages' %v", got, want)
		}
		slices.Sort(reported)
		slices.Sort(ids)
		if !slices.Equal(reported, ids) {
			t.Errorf("events reported %v, want %v", reported, ids)
		}
		if serial == 0 {
			t.Error("the join's serial transaction was not reported")
		}
	})
}
