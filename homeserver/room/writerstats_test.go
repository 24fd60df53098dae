package room_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestWriterStats: the writer counts every job, failed ones too, and the transactions that carried
// them; concurrent sends share transactions (group commit).
func TestWriterStats(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		svc := concurrentService(t, s)
		ctx := context.Background()
		alice := "@alice:test.local"
		roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice})
		if err != nil {
			t.Fatal(err)
		}
		before := svc.WriterStats()
		if before.Jobs == 0 || before.Batches == 0 || before.Batches > before.Jobs || before.Busy <= 0 {
			t.Fatalf("after creating a room: %+v", before)
		}
		const workers, per = 8, 25
		if _, err := sendConcurrently(svc, roomID, alice, workers, per); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Send(ctx, "!unknown:test.local", senderOf(alice, "x"), "m.room.message", json.RawMessage(`{}`)); err == nil {
			t.Fatal("send into an unknown room succeeded")
		}
		after := svc.WriterStats()
		jobs, batches := after.Jobs-before.Jobs, after.Batches-before.Batches
		if jobs != workers*per+1 {
			t.Errorf("%d jobs counted, want %d", jobs, workers*per+1)
		}
		if batches < 1 || batches >= jobs {
			t.Errorf("%d jobs in %d transactions: concurrent sends should share transactions", jobs, batches)
		}
		if after.Busy <= before.Busy {
			t.Errorf("busy time did not grow: %v then %v", before.Busy, after.Busy)
		}
	})
}
