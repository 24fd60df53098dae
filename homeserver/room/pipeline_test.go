package room

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestPipelineFailedBatch fails some pipelined batches while senders keep sending: a batch is
// prepared on the cached room state the batch before it left, so when that one fails, both must
// be forgotten and the second one's jobs run again. Every send that succeeded is stored, every
// stored event's prev_events are stored (no event built on a rolled-back one), the positions
// are unique, and a retry of each successful send (same transaction ID) gives the same event.
func TestPipelineFailedBatch(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		s := newTestService(t, st)
		errBoom := errors.New("boom")
		var batches atomic.Int64
		s.commitHook = func() error {
			// Slow commits, so that the next batch is prepared while this one is in flight.
			time.Sleep(2 * time.Millisecond)
			if batches.Add(1)%3 == 0 {
				return errBoom
			}
			return nil
		}
		alice := "@alice:test.local"
		// Two rooms: a batch prepared on a failed one may also hold events of a room that one did
		// not touch.
		var rooms []string
		for range 2 {
			roomID, err := s.CreateRoom(ctx, CreateRequest{Creator: alice, Preset: PresetPublicChat})
			if err != nil {
				t.Fatal(err)
			}
			rooms = append(rooms, roomID)
		}
		roomOf := map[string]string{} // txn -> room
		from := func(txn string) Sender {
			return Sender{UserID: alice, Localpart: "alice", DeviceID: "DEV", TxnID: txn}
		}
		const workers, per = 8, 40
		sent := map[string]string{} // txn -> event
		var mu sync.Mutex
		var failed atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					txn := fmt.Sprintf("w%d-%d", w, i)
					roomID := rooms[(w+i)%2]
					mu.Lock()
					roomOf[txn] = roomID
					mu.Unlock()
					id, err := s.Send(ctx, roomID, from(txn), "m.room.message", mustJSON(map[string]string{"msgtype": "m.text", "body": txn}))
					if errors.Is(err, errBoom) {
						failed.Add(1)
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					sent[txn] = id
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		if failed.Load() == 0 || len(sent) == 0 {
			t.Fatalf("want some failed and some stored sends: %d failed, %d stored", failed.Load(), len(sent))
		}
		s.commitHook = nil
		// The room still works, and retries find the events the first attempts stored.
		for txn, id := range sent {
			again, err := s.Send(ctx, roomOf[txn], from(txn), "m.room.message", mustJSON(map[string]string{"msgtype": "m.text", "body": txn}))
			if err != nil || again != id {
				t.Fatalf("retry of %s: %s, %v; first attempt gave %s", txn, again, err, id)
			}
		}
		events, err := st.Read().RoomEventsBetween(ctx, rooms, 0, 1<<62, 10000)
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]bool{}
		positions := map[int64]bool{}
		for _, e := range events {
			stored[e.EventID] = true
			if positions[e.StreamPos] {
				t.Fatalf("position %d used twice", e.StreamPos)
			}
			positions[e.StreamPos] = true
		}
		for txn, id := range sent {
			if !stored[id] {
				t.Fatalf("send %s answered %s, which is not stored", txn, id)
			}
		}
		v, _ := event.LookupVersion("11")
		for _, e := range events {
			p, err := event.Parse(v, e.PDU)
			if err != nil {
				t.Fatal(err)
			}
			for _, prev := range p.PrevEvents {
				if !stored[prev] {
					t.Fatalf("event %s names %s, which is not stored", e.EventID, prev)
				}
			}
		}
		if got := len(events); got < len(sent) {
			t.Fatalf("%d events stored for %d sends", got, len(sent))
		}
	})
}

// TestRelationOf: the relation of an event's content, also when its key is written with escapes
// (relationOf skips the parse for contents that cannot hold the key).
func TestRelationOf(t *testing.T) {
	for content, want := range map[string]relation{
		`{"msgtype":"m.text","body":"hi"}`: {},
		`{"body":"line\nbreak"}`:           {},
		`{"m.relates_to":{"event_id":"$a","rel_type":"m.annotation","key":"k"}}`:            {EventID: "$a", RelType: "m.annotation", Key: "k"},
		`{"m.relates\u005fto":{"event_id":"$b","rel_type":"m.thread"}}`:                     {EventID: "$b", RelType: "m.thread"},
		`{"body":"x","m.relates_to":{"event_id":"$c","rel_type":"m.replace"},"n":"\u00e9"}`: {EventID: "$c", RelType: "m.replace"},
	} {
		if got := relationOf([]byte(content)); got != want {
			t.Errorf("relationOf(%s) = %+v, want %+v", content, got, want)
		}
	}
}
