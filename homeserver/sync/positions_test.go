package sync_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// TestPositionsKeptUntilWrite: the stream positions a sync starts from are kept between syncs,
// and a change is seen by the first sync after it whether it was committed on this node without a
// notice (its commit is enough, and the counters are not read again: the node knows what it wrote)
// or on another node sharing the database (its bus notice is).
func TestPositionsKeptUntilWrite(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		ctx := context.Background()
		alice := s.Register(t, "alice", "password-alice")
		r := doSync(t, s, alice)
		r = doSync(t, s, alice, "since", r.NextBatch) // the positions are kept now
		reads := hsync.PositionReads(s.Sync)
		putData := func(st *storage.Store, typ string) int64 {
			t.Helper()
			var pos int64
			if err := st.Write(ctx, func(c storage.Conn) error {
				var err error
				pos, err = c.PutAccountData(ctx, alice.Localpart, "", typ, json.RawMessage(`{"n":1}`))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			return pos
		}

		// Committed here, announced to nobody: the next sync reads the counters again.
		putData(s.Store, "org.example.local")
		r = doSync(t, s, alice, "since", r.NextBatch)
		if !hasType(r.AccountData.Events, "org.example.local") {
			t.Fatalf("account data committed on this node is not in the next sync: %+v", r.AccountData.Events)
		}
		// And a message sent here, announced: the woken sync has it, still without reading them.
		roomID := newRoom(t, s, alice, nil)
		r = doSync(t, s, alice, "since", r.NextBatch)
		woken := make(chan syncResp, 1)
		go func() { woken <- doSync(t, s, alice, "since", r.NextBatch, "timeout", "10000") }()
		waitParked(t, s, 1)
		send(t, s, alice, roomID, "while parked")
		if r = <-woken; len(r.Rooms.Join[roomID].Timeline.Events) != 1 {
			t.Fatalf("the woken sync has %d events, want the message", len(r.Rooms.Join[roomID].Timeline.Events))
		}
		if n := hsync.PositionReads(s.Sync) - reads; n != 0 {
			t.Errorf("the counters were read %d times after this node's own writes", n)
		}

		// From here the service shares its database with another node, as with an external bus.
		hsync.SetAlone(s.Sync, false)

		// Another node: its own connection to the database, and a notice on the bus once committed.
		other, err := storage.Open(ctx, storage.Options{Backend: s.Config.Database.Backend, SQLitePath: s.Config.Database.SQLitePath,
			PostgresDSN: s.Config.Database.PostgresDSN, MaxOpenConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		r = doSync(t, s, alice, "since", r.NextBatch)
		done := make(chan syncResp, 1)
		go func() { done <- doSync(t, s, alice, "since", r.NextBatch, "timeout", "10000") }()
		waitParked(t, s, 1)
		pos := putData(other, "org.example.remote")
		notice, _ := json.Marshal(map[string]any{"user_id": alice.UserID, "pos": pos})
		if err := s.Bus.Publish(bus.SubjectAccountData, notice); err != nil {
			t.Fatal(err)
		}
		if got := <-done; !hasType(got.AccountData.Events, "org.example.remote") {
			t.Fatalf("account data of another node is not in the sync its notice woke: %+v", got.AccountData.Events)
		}
	})
}
