package room_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestChildrenUpToSharesRead: ChildrenUpTo answers from the read the conversion of the same events
// up to the same position made (a shared /sync room section asks both), and finds the edit that
// the conversion bundled; other events or another position are read anew.
func TestChildrenUpToSharesRead(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		alice := "@alice:test.local"
		svc, roomID := serviceWithRoom(t, s, room.CreateRequest{Creator: alice})
		msg := json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)
		parent, err := svc.Send(ctx, roomID, senderOf(alice, "t1"), "m.room.message", msg)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := svc.Send(ctx, roomID, senderOf(alice, "t2"), "m.room.message", msg)
		if err != nil {
			t.Fatal(err)
		}
		edit, err := svc.Send(ctx, roomID, senderOf(alice, "t3"), "m.room.message", json.RawMessage(
			`{"msgtype":"m.text","body":"* hello","m.new_content":{"msgtype":"m.text","body":"hello"},`+
				`"m.relates_to":{"rel_type":"m.replace","event_id":"`+parent+`"}}`))
		if err != nil {
			t.Fatal(err)
		}
		evs, err := s.Read().Events(ctx, []string{parent, plain})
		if err != nil || len(evs) != 2 {
			t.Fatalf("events: %v, %v", evs, err)
		}
		if evs[0].EventID != parent {
			evs[0], evs[1] = evs[1], evs[0]
		}
		upTo, err := s.Read().Position(ctx, storage.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}

		reads := svc.ChildReads()
		client, err := svc.ClientEventsUpTo(ctx, room.Reader{UserID: alice, DeviceID: "DEV"}, evs, upTo)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(client[0]), `"m.replace"`) || strings.Contains(string(client[1]), `"m.relations"`) {
			t.Fatalf("conversion: edit not bundled with its parent only:\n%s\n%s", client[0], client[1])
		}
		if svc.ChildReads() == reads {
			t.Fatal("the conversion read no children")
		}
		reads = svc.ChildReads()
		children, err := svc.ChildrenUpTo(ctx, evs, upTo)
		if err != nil {
			t.Fatal(err)
		}
		if len(children) != 1 || children[0].EventID != edit {
			t.Errorf("children: %+v, want the edit %s", children, edit)
		}
		if n := svc.ChildReads() - reads; n != 0 {
			t.Errorf("ChildrenUpTo after the conversion read children %d times, want none", n)
		}

		// The plain event alone, and the same events up to another position: new reads.
		if children, err := svc.ChildrenUpTo(ctx, evs[1:], upTo); err != nil || len(children) != 0 {
			t.Errorf("children of the plain event: %+v, %v; want none", children, err)
		}
		if _, err := svc.ChildrenUpTo(ctx, evs, upTo-1); err != nil {
			t.Fatal(err)
		}
		if n := svc.ChildReads() - reads; n != 2 {
			t.Errorf("%d reads for two other questions, want 2", n)
		}
	})
}

// TestFreshEventsChildren: the children of messages the writer pipelined since its serial path last
// ran are known to be none without a read; once an edit is stored (by the serial path) they are
// read, and the edit is found.
func TestFreshEventsChildren(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		alice := "@alice:test.local"
		svc, roomID := serviceWithRoom(t, s, room.CreateRequest{Creator: alice})
		ids, err := sendConcurrently(svc, roomID, alice, 3, 4)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := s.Read().Events(ctx, ids)
		if err != nil || len(evs) != len(ids) {
			t.Fatalf("events: %d, %v", len(evs), err)
		}
		upTo, err := s.Read().Position(ctx, storage.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		reads := svc.ChildReads()
		if children, err := svc.ChildrenUpTo(ctx, evs, upTo); err != nil || len(children) != 0 {
			t.Fatalf("children of new messages: %v, %v", children, err)
		}
		if n := svc.ChildReads() - reads; n != 0 {
			t.Errorf("%d reads for the children of new messages, want none", n)
		}

		edit, err := svc.Send(ctx, roomID, senderOf(alice, "edit"), "m.room.message", json.RawMessage(
			`{"msgtype":"m.text","body":"* x","m.new_content":{"msgtype":"m.text","body":"x"},`+
				`"m.relates_to":{"rel_type":"m.replace","event_id":"`+ids[0]+`"}}`))
		if err != nil {
			t.Fatal(err)
		}
		children, err := svc.ChildrenUpTo(ctx, evs, upTo+1)
		if err != nil || len(children) != 1 || children[0].EventID != edit {
			t.Fatalf("children after an edit: %+v, %v; want %s", children, err, edit)
		}
		if n := svc.ChildReads() - reads; n != 1 {
			t.Errorf("%d reads after the edit, want 1", n)
		}
	})
}

// serviceWithRoom starts a room service on s and creates a room with req.
func serviceWithRoom(t *testing.T, s *storage.Store, req room.CreateRequest) (*room.Service, string) {
	t.Helper()
	svc := concurrentService(t, s)
	roomID, err := svc.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return svc, roomID
}
