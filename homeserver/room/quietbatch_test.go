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

// TestOnQuietBatch: the writer reports the positions of each pipelined batch of plain messages,
// and they are exactly the messages' positions; a member event is in none of them.
func TestOnQuietBatch(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		svc := concurrentService(t, s)
		ctx := context.Background()
		alice, bob := "@alice:test.local", "@bob:test.local"
		roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice, Preset: room.PresetPublicChat})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var ranges [][2]int64
		svc.OnQuietBatch(func(after, last int64) {
			mu.Lock()
			ranges = append(ranges, [2]int64{after, last})
			mu.Unlock()
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
	})
}
