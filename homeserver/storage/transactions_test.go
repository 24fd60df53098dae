package storage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// txnRow is a stored timeline event; device and txnID empty for one sent without a transaction ID.
func txnRow(roomID, id, typ, device, txnID string, ts, pos int64) storage.Event {
	return storage.Event{EventID: id, RoomID: roomID, Type: typ, Sender: "@alice:test.local", Depth: pos,
		OriginServerTS: ts, StreamPos: pos, TxnID: txnID, TxnDevice: device,
		PDU: []byte(fmt.Sprintf(`{"type":%q,"redacts":"$target"}`, typ)), ClientJSON: []byte(`{}`)}
}

// TestRecentTxnEvents reads back the events sent with a transaction ID since a time, in every
// room: not older ones, not those without a transaction ID; the stored form only for redactions.
func TestRecentTxnEvents(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		err := s.Write(ctx, func(c storage.Conn) error {
			for _, r := range []string{"!a:test.local", "!b:test.local", "!quiet:test.local"} {
				if err := c.InsertRoom(ctx, storage.Room{RoomID: r, Version: "11", Creator: "@alice:test.local", CreatedTS: 1}); err != nil {
					return err
				}
			}
			// More rooms than one query reads, each with a recent send.
			var more []storage.Event
			for i := range 150 {
				r := fmt.Sprintf("!r%d:test.local", i)
				if err := c.InsertRoom(ctx, storage.Room{RoomID: r, Version: "11", Creator: "@alice:test.local", CreatedTS: 1}); err != nil {
					return err
				}
				more = append(more, txnRow(r, fmt.Sprintf("$r%d", i), "m.room.message", "D3", "t", 5000, int64(10+i)))
			}
			return c.InsertTimelineEvents(ctx, append([]storage.Event{
				txnRow("!a:test.local", "$old", "m.room.message", "D1", "t0", 999, 1),
				txnRow("!a:test.local", "$a1", "m.room.message", "D1", "t1", 1000, 2),
				txnRow("!a:test.local", "$notxn", "m.room.message", "", "", 1500, 3),
				txnRow("!b:test.local", "$b1", "m.room.message", "D2", "t1", 2000, 4),
				txnRow("!b:test.local", "$red", "m.room.redaction", "D2", "t2", 3000, 5),
			}, more...))
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Read().RecentTxnEvents(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]storage.TxnEvent{}
		for _, e := range got {
			byID[e.EventID] = e
		}
		if len(got) != 153 || len(byID) != 153 {
			t.Fatalf("got %d events (%d distinct), want $a1, $b1, $red and one in each of 150 more rooms", len(got), len(byID))
		}
		if e := byID["$r149"]; e.RoomID != "!r149:test.local" || e.DeviceID != "D3" {
			t.Errorf("$r149: got %+v", e)
		}
		want := storage.TxnEvent{RoomID: "!b:test.local", EventID: "$b1", Type: "m.room.message", Sender: "@alice:test.local",
			DeviceID: "D2", TxnID: "t1", OriginServerTS: 2000}
		if e := byID["$b1"]; e.RoomID != want.RoomID || e.Type != want.Type || e.Sender != want.Sender || e.DeviceID != want.DeviceID ||
			e.TxnID != want.TxnID || e.OriginServerTS != want.OriginServerTS || e.PDU != nil {
			t.Errorf("$b1: got %+v, want %+v", e, want)
		}
		if e := byID["$a1"]; e.RoomID != "!a:test.local" || e.DeviceID != "D1" || e.TxnID != "t1" {
			t.Errorf("$a1: got %+v", e)
		}
		if e := byID["$red"]; !strings.Contains(string(e.PDU), `"redacts":"$target"`) {
			t.Errorf("the redaction comes without its stored form: %+v", e)
		}
	})
}

// TestRecentTxnEventsUseRoomIndex guards the SQLite plan of the read the room writer makes at
// start: a range of each room's events_room_ts, not a scan of every event.
func TestRecentTxnEventsUseRoomIndex(t *testing.T) {
	s := storagetest.Open(t, "sqlite")
	for _, n := range []int{1, 100} {
		plan, err := s.ExplainRecentTxnEvents(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(plan, "SCAN events") || !strings.Contains(plan, "USING INDEX events_room_ts (room_id=? AND origin_server_ts>?)") {
			t.Errorf("the read of %d rooms' recent transaction IDs does not search events_room_ts:\n%s", n, plan)
		}
	}
}

// TestBatchInsertConflict: a repeated key in a batch insert (INSERT OR FAIL on SQLite, which may
// leave the rows before it in place) is ErrConflict, and the Write that gives up on it keeps
// nothing, not even what it wrote before; the single-row InsertEvent is ErrConflict too, and the
// writer stays usable after both.
func TestBatchInsertConflict(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		first := txnRow("!a:test.local", "$a1", "m.room.message", "D1", "t1", 1, 1)
		if err := s.Write(ctx, func(c storage.Conn) error { return c.InsertEvent(ctx, first) }); err != nil {
			t.Fatal(err)
		}
		before := txnRow("!a:test.local", "$b1", "m.room.message", "D1", "t2", 2, 2)
		err := s.Write(ctx, func(c storage.Conn) error {
			if err := c.InsertEvent(ctx, before); err != nil {
				return err
			}
			return c.InsertTimelineEvents(ctx, []storage.Event{txnRow("!a:test.local", "$c1", "m.room.message", "", "", 3, 3), first})
		})
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("a repeated event ID in a batch: %v, want ErrConflict", err)
		}
		err = s.Write(ctx, func(c storage.Conn) error { return c.InsertEvent(ctx, first) })
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("a repeated event ID: %v, want ErrConflict", err)
		}
		for _, id := range []string{"$b1", "$c1"} {
			if _, err := s.Read().Event(ctx, id); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("%s of the failed Write: %v, want ErrNotFound", id, err)
			}
		}
		// The writer goes on.
		if err := s.Write(ctx, func(c storage.Conn) error { return c.InsertEvent(ctx, before) }); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriteCancelledIsRolledBack: a Write whose context ends before it commits keeps nothing.
func TestWriteCancelledIsRolledBack(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx, cancel := context.WithCancel(context.Background())
		e := txnRow("!a:test.local", "$a1", "m.room.message", "D1", "t1", 1, 1)
		err := s.Write(ctx, func(c storage.Conn) error {
			err := c.InsertEvent(ctx, e)
			cancel()
			return err
		})
		if err == nil {
			t.Fatal("a cancelled Write committed")
		}
		if _, err := s.Read().Event(context.Background(), "$a1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("after a cancelled Write: %v, want ErrNotFound", err)
		}
		if err := s.Write(context.Background(), func(c storage.Conn) error { return c.InsertEvent(context.Background(), e) }); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReplaceForwardExtremity: the one-statement replacement of a room's only extremity, and
// ErrNotFound (nothing changed) when the old one is not an extremity of that room.
func TestReplaceForwardExtremity(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite := func(fn func(c storage.Conn) error) {
			t.Helper()
			if err := s.Write(ctx, fn); err != nil {
				t.Fatal(err)
			}
		}
		mustWrite(func(c storage.Conn) error {
			if err := c.SetForwardExtremities(ctx, "!a:test.local", []string{"$a1"}); err != nil {
				return err
			}
			return c.SetForwardExtremities(ctx, "!b:test.local", []string{"$a1"})
		})
		mustWrite(func(c storage.Conn) error { return c.ReplaceForwardExtremity(ctx, "!a:test.local", "$a1", "$a2") })
		err := s.Write(ctx, func(c storage.Conn) error { return c.ReplaceForwardExtremity(ctx, "!a:test.local", "$a1", "$a3") })
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("replacing an extremity the room does not have: %v, want ErrNotFound", err)
		}
		for room, want := range map[string]string{"!a:test.local": "[$a2]", "!b:test.local": "[$a1]"} {
			got, err := s.Read().ForwardExtremities(ctx, room)
			if err != nil || fmt.Sprint(got) != want {
				t.Errorf("%s: extremities %v, %v; want %s", room, got, err, want)
			}
		}
	})
}
