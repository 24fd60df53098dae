package room_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// concurrentService starts a room service on s (stopped when the test ends).
func concurrentService(tb testing.TB, s *storage.Store) *room.Service {
	tb.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	svc := room.New(s, nil, room.Options{ServerName: "test.local", Key: signing.Key{ID: "ed25519:c", Private: priv}, DefaultVersion: event.V11},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	tb.Cleanup(svc.Close)
	return svc
}

// senderOf is a sender on device DEV with a transaction ID.
func senderOf(user, txn string) room.Sender {
	return room.Sender{UserID: user, Localpart: user[1:], DeviceID: "DEV", TxnID: txn}
}

// sendConcurrently has `workers` goroutines each send `per` messages into roomID as user and returns
// every event ID the service gave back. It may run outside the test goroutine, so it returns errors.
func sendConcurrently(svc *room.Service, roomID, user string, workers, per int) ([]string, error) {
	ctx := context.Background()
	ids := make([]string, workers*per)
	errs := make(chan error, workers*per)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				n := w*per + i
				body := json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"w%d-%d"}`, w, i))
				id, err := svc.Send(ctx, roomID, senderOf(user, fmt.Sprintf("%s-%d", roomID, n)), "m.room.message", body)
				if err != nil {
					errs <- fmt.Errorf("worker %d send %d: %w", w, i, err)
					return
				}
				ids[n] = id
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return ids, errors.Join(all...)
}

// requireLinearDAG reads the whole timeline of a room and checks that it is one chain: depths
// 1..N without gaps, each event's only prev_event the one before it, stream positions strictly
// increasing along the chain. It returns the events' IDs in order.
func requireLinearDAG(t *testing.T, s *storage.Store, roomID string) []string {
	t.Helper()
	ctx := context.Background()
	evs, err := s.Read().TimelineEvents(ctx, roomID, storage.MinTopo, false, 100000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || evs[0].Type != room.TypeCreate {
		t.Fatalf("timeline does not start with the create event")
	}
	ids := make([]string, len(evs))
	var lastPos int64
	for i, e := range evs {
		ids[i] = e.EventID
		if e.Depth != int64(i+1) {
			t.Fatalf("event %d (%s) has depth %d, want %d", i, e.EventID, e.Depth, i+1)
		}
		if e.StreamPos <= lastPos {
			t.Fatalf("event %d: stream position %d after %d", i, e.StreamPos, lastPos)
		}
		lastPos = e.StreamPos
		pdu, err := event.Parse(event.V11, e.PDU)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if pdu.Depth != e.Depth || pdu.EventID != e.EventID {
			t.Fatalf("event %d: stored columns (%s, %d) differ from the PDU (%s, %d)", i, e.EventID, e.Depth, pdu.EventID, pdu.Depth)
		}
		var want []string
		if i > 0 {
			want = []string{evs[i-1].EventID}
		}
		if !slices.Equal(pdu.PrevEvents, want) {
			t.Fatalf("event %d: prev_events %v, want %v", i, pdu.PrevEvents, want)
		}
	}
	exts, err := s.Read().ForwardExtremities(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(exts, ids[len(ids)-1:]) {
		t.Fatalf("forward extremities %v, want the last event %s", exts, ids[len(ids)-1])
	}
	return ids
}

// requireSent checks that the returned IDs are distinct, all in the timeline, and make up all of its
// messages.
func requireSent(t *testing.T, s *storage.Store, sent, timeline []string) {
	t.Helper()
	ctx := context.Background()
	inTimeline := make(map[string]bool, len(timeline))
	for _, id := range timeline {
		inTimeline[id] = true
	}
	distinct := map[string]bool{}
	for _, id := range sent {
		if id == "" || distinct[id] {
			t.Fatalf("event ID %q returned twice or empty", id)
		}
		distinct[id] = true
		if !inTimeline[id] {
			t.Fatalf("sent event %s is not in the timeline", id)
		}
	}
	evs, err := s.Read().Events(ctx, timeline)
	if err != nil {
		t.Fatal(err)
	}
	messages := 0
	for _, e := range evs {
		if e.Type == "m.room.message" {
			messages++
			if !distinct[e.EventID] {
				t.Fatalf("timeline has a message nobody sent: %s", e.EventID)
			}
		}
	}
	if messages != len(sent) {
		t.Fatalf("timeline has %d messages, %d were sent", messages, len(sent))
	}
}

// TestConcurrentSendsOneRoom: 20 goroutines × 25 messages into one room give 500 events on one
// linear chain.
func TestConcurrentSendsOneRoom(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		svc := concurrentService(t, s)
		alice := "@alice:test.local"
		roomID, err := svc.CreateRoom(context.Background(), room.CreateRequest{Creator: alice, Preset: room.PresetPrivateChat})
		if err != nil {
			t.Fatal(err)
		}
		// A reader pages forward while the writers run, as a client following the room does: it must
		// never pass a position below which an event commits later.
		done := make(chan struct{})
		readerSaw := make(chan []string, 1)
		go func() {
			var seen []string
			pos := storage.MinTopo
			for finished := false; ; {
				select {
				case <-done:
					finished = true
				default:
				}
				evs, err := s.Read().TimelineEvents(context.Background(), roomID, pos, false, 50)
				if err != nil {
					t.Error(err)
					break
				}
				for _, e := range evs {
					seen = append(seen, e.EventID)
					pos = storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}
				}
				if finished && len(evs) == 0 {
					break
				}
			}
			readerSaw <- seen
		}()
		sent, err := sendConcurrently(svc, roomID, alice, 20, 25)
		close(done)
		if err != nil {
			t.Fatal(err)
		}
		timeline := requireLinearDAG(t, s, roomID)
		requireSent(t, s, sent, timeline)
		if seen := <-readerSaw; !slices.Equal(seen, timeline) {
			t.Fatalf("a concurrent forward reader saw %d events, the timeline has %d", len(seen), len(timeline))
		}
		if len(sent) != 500 {
			t.Fatalf("%d sent", len(sent))
		}
	})
}

// TestConcurrentSendsManyRooms sends into five rooms at once, each with several writers, and
// creates rooms meanwhile: every room stays a linear chain holding exactly its own messages.
func TestConcurrentSendsManyRooms(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc := concurrentService(t, s)
		rooms := make([]string, 5)
		users := make([]string, 5)
		for i := range rooms {
			users[i] = fmt.Sprintf("@user%d:test.local", i)
			var err error
			if rooms[i], err = svc.CreateRoom(ctx, room.CreateRequest{Creator: users[i]}); err != nil {
				t.Fatal(err)
			}
		}
		sent := make([][]string, len(rooms))
		var wg sync.WaitGroup
		var created atomic.Int64
		for i := range rooms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if sent[i], err = sendConcurrently(svc, rooms[i], users[i], 4, 20); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				if _, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: fmt.Sprintf("@late%d:test.local", i)}); err != nil {
					t.Errorf("create during sends: %v", err)
					return
				}
				created.Add(1)
			}
		}()
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		allPos := map[int64]string{}
		for i, roomID := range rooms {
			timeline := requireLinearDAG(t, s, roomID)
			requireSent(t, s, sent[i], timeline)
			evs, err := s.Read().Events(ctx, timeline)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				if other, dup := allPos[e.StreamPos]; dup {
					t.Fatalf("stream position %d given to %s and %s", e.StreamPos, other, e.EventID)
				}
				allPos[e.StreamPos] = e.EventID
				if e.RoomID != roomID {
					t.Fatalf("event %s of room %s listed in %s", e.EventID, e.RoomID, roomID)
				}
			}
		}
		if created.Load() != 5 {
			t.Fatalf("created %d rooms during the sends", created.Load())
		}
	})
}

// BenchmarkSend measures sends into one room from parallel clients through the service (group
// commit), on each backend.
func BenchmarkSend(b *testing.B) {
	for _, backend := range storagetest.Backends {
		b.Run(backend, func(b *testing.B) {
			s := storagetest.Open(b, backend)
			svc := concurrentService(b, s)
			ctx := context.Background()
			alice := "@alice:test.local"
			roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice})
			if err != nil {
				b.Fatal(err)
			}
			body := json.RawMessage(`{"msgtype":"m.text","body":"benchmark message"}`)
			var n atomic.Int64
			b.SetParallelism(8) // 8 × GOMAXPROCS concurrent senders, as from many clients
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := svc.Send(ctx, roomID, senderOf(alice, fmt.Sprint("b", n.Add(1))), "m.room.message", body); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if st := svc.WriterStats(); st.Batches > 0 {
				b.ReportMetric(float64(st.Jobs)/float64(st.Batches), "jobs/batch")
				b.ReportMetric(float64(st.Busy.Nanoseconds())/float64(st.Jobs), "writer-ns/job")
				b.ReportMetric(float64(st.Committing.Nanoseconds())/float64(st.Jobs), "commit-ns/job")
			}
		})
	}
}
