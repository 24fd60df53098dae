package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func TestFederationOutbox(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.InsertRoom(ctx, storage.Room{RoomID: "!r:a", Version: "11", Creator: "@u:a", CreatedTS: 1}); err != nil {
				return err
			}
			for i, id := range []string{"$1", "$2", "$3"} {
				if err := c.InsertEvent(ctx, storage.Event{EventID: id, RoomID: "!r:a", Type: "m.room.message", Sender: "@u:a",
					StreamPos: int64(i + 1), PDU: []byte(`{"pdu":"` + id + `"}`), ClientJSON: []byte(`{}`)}); err != nil {
					return err
				}
			}
			return c.InsertOutbox(ctx, []storage.OutboxRow{
				{Destination: "b.org", StreamPos: 1, EventID: "$1"}, {Destination: "b.org", StreamPos: 2, EventID: "$2"},
				{Destination: "b.org", StreamPos: 3, EventID: "$3"}, {Destination: "c.org", StreamPos: 2, EventID: "$2"},
				{Destination: "b.org", StreamPos: 2, EventID: "$2"}, // queued twice: kept once
			})
		})
		dests, err := s.Read().OutboxDestinations(ctx)
		if err != nil || len(dests) != 2 || dests[0] != "b.org" || dests[1] != "c.org" {
			t.Fatalf("OutboxDestinations = %v, %v", dests, err)
		}
		rows, err := s.Read().OutboxPDUs(ctx, "b.org", 2)
		if err != nil || len(rows) != 2 || rows[0].EventID != "$1" || rows[1].StreamPos != 2 || rows[0].RoomVersion != "11" ||
			string(rows[0].PDU) != `{"pdu":"$1"}` {
			t.Fatalf("OutboxPDUs = %+v, %v", rows, err)
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteOutbox(ctx, "b.org", 2) })
		if n, err := s.Read().OutboxLen(ctx, "b.org"); err != nil || n != 1 {
			t.Fatalf("OutboxLen after delete = %d, %v", n, err)
		}
		if n, err := s.Read().OutboxLen(ctx, "c.org"); err != nil || n != 1 {
			t.Fatalf("other destination's queue = %d, %v", n, err)
		}
		metas, err := s.Read().EventMetas(ctx, []string{"$1", "$nope"})
		if err != nil || len(metas) != 1 || metas["$1"].Outlier {
			t.Fatalf("EventMetas = %+v, %v", metas, err)
		}
	})
}

func TestFederationInboundTxns(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		if _, err := s.Read().InboundTxn(ctx, "a.org", "1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown txn: %v", err)
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.InsertInboundTxn(ctx, "a.org", "1", []byte(`{"pdus":{}}`), 1000) })
		mustWrite(t, s, func(c storage.Conn) error { return c.InsertInboundTxn(ctx, "a.org", "1", []byte(`{"other":1}`), 2000) })
		mustWrite(t, s, func(c storage.Conn) error { return c.InsertInboundTxn(ctx, "b.org", "1", []byte(`{"b":1}`), 5000) })
		if got, err := s.Read().InboundTxn(ctx, "a.org", "1"); err != nil || string(got) != `{"pdus":{}}` {
			t.Fatalf("InboundTxn = %s, %v (the first response must stay)", got, err)
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.PurgeInboundTxns(ctx, 3000) })
		if _, err := s.Read().InboundTxn(ctx, "a.org", "1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("purged txn: %v", err)
		}
		if _, err := s.Read().InboundTxn(ctx, "b.org", "1"); err != nil {
			t.Fatalf("newer txn purged: %v", err)
		}
	})
}

func TestFederationEDUOutboxAndLeases(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			return c.InsertOutboxEDUs(ctx, []storage.OutboxEDU{
				{Destination: "b.org", ID: 1, Type: "m.receipt", Content: []byte(`{"a":1}`), QueuedTS: 5},
				{Destination: "c.org", ID: 1, Type: "m.receipt", Content: []byte(`{"a":1}`), QueuedTS: 5},
				{Destination: "b.org", ID: 2, Type: "m.direct_to_device", Content: []byte(`{"b":2}`), QueuedTS: 6},
			})
		})
		edus, err := s.Read().OutboxEDUs(ctx, "b.org", 10)
		if err != nil || len(edus) != 2 || edus[0].ID != 1 || edus[1].Type != "m.direct_to_device" || string(edus[1].Content) != `{"b":2}` {
			t.Fatalf("OutboxEDUs = %+v, %v", edus, err)
		}
		if dests, err := s.Read().OutboxDestinations(ctx); err != nil || len(dests) != 2 {
			t.Fatalf("destinations with only EDUs queued = %v, %v", dests, err)
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteOutboxEDUs(ctx, "b.org", 1) })
		if n, err := s.Read().OutboxEDULen(ctx, "b.org"); err != nil || n != 1 {
			t.Fatalf("OutboxEDULen after delete = %d, %v", n, err)
		}

		lease := func(node string, now, expires int64) bool {
			var held bool
			mustWrite(t, s, func(c storage.Conn) (err error) {
				held, err = c.AcquireLease(ctx, "b.org", node, now, expires)
				return err
			})
			return held
		}
		if !lease("n1", 100, 200) {
			t.Fatal("a free lease was not taken")
		}
		if lease("n2", 150, 250) {
			t.Fatal("a lease held by another node until 200 was taken at 150")
		}
		if !lease("n1", 150, 300) {
			t.Fatal("the holder could not renew its lease")
		}
		if !lease("n2", 301, 400) {
			t.Fatal("an expired lease was not taken over")
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.ReleaseLease(ctx, "b.org", "n1") }) // not n1's any more
		if lease("n1", 302, 400) {
			t.Fatal("releasing another node's lease freed it")
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.ReleaseLease(ctx, "b.org", "n2") })
		if !lease("n1", 303, 400) {
			t.Fatal("a released lease was not free")
		}
	})
}

// Presence goes to the servers of the users sharing a room with the user, this server's own left out.
func TestRemoteUsersSharingRoomWith(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		join := func(roomID, user, membership string, pos int64) {
			mustWrite(t, s, func(c storage.Conn) error {
				return c.SetCurrentState(ctx, roomID, storage.StateKey{Type: "m.room.member", StateKey: user}, "$"+roomID+user, membership, pos)
			})
		}
		join("!a:here.org", "@me:here.org", "join", 1)
		join("!a:here.org", "@local:here.org", "join", 2)
		join("!a:here.org", "@bob:there.org", "join", 3)
		join("!a:here.org", "@carol:else.org", "leave", 4)
		join("!b:here.org", "@me:here.org", "join", 5)
		join("!b:here.org", "@dave:else.org", "join", 6)
		join("!c:here.org", "@erin:other.org", "join", 7) // a room @me is not in
		got, err := s.Read().RemoteUsersSharingRoomWith(ctx, "@me:here.org", "here.org")
		slices.Sort(got)
		if err != nil || !slices.Equal(got, []string{"@bob:there.org", "@dave:else.org"}) {
			t.Fatalf("RemoteUsersSharingRoomWith = %v, %v", got, err)
		}
	})
}
