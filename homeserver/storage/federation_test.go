package storage_test

import (
	"context"
	"errors"
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
