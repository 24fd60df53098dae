package sync_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// BenchmarkFanOut is the server's side of a fan-out (cmd/syncload -scenario fanout) without HTTP:
// receivers long-poll the sync service in one public room, each op sends one message and waits
// until every receiver has built and encoded a response holding it. Besides the wall time it
// reports the process's CPU time per message and per response, which other work on the machine
// changes much less.
//
//	go test ./homeserver/sync -run '^$' -bench FanOut -benchtime 200x
//
// -fanout.cpuprofile FILE profiles the timed part only (-cpuprofile would mostly show the setup);
// -fanout.memprofile FILE writes what -diff_base needs to see the allocations of the timed part.
func BenchmarkFanOut(b *testing.B) {
	for _, backend := range storagetest.Backends {
		for _, n := range []int{100, 1000} {
			b.Run(fmt.Sprintf("%s/%d", backend, n), func(b *testing.B) { benchFanOut(b, backend, n) })
		}
	}
}

func benchFanOut(b *testing.B, backend string, receivers int) {
	s := servertest.Start(b, backend)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice := room.Sender{UserID: "@alice:localhost", Localpart: "alice", DeviceID: "ALICE"}
	roomID, err := s.Rooms.CreateRoom(ctx, room.CreateRequest{Creator: alice.UserID, Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	f, err := filter.Parse([]byte(`{"room":{"timeline":{"limit":50}}}`))
	if err != nil {
		b.Fatal(err)
	}
	// Everyone joins first, and starts from the token of one initial sync (a token is positions
	// only): the setup costs no fan-out of its own.
	users := make([]room.Sender, receivers)
	for i := range users {
		users[i] = room.Sender{UserID: fmt.Sprintf("@r%d:localhost", i), Localpart: fmt.Sprintf("r%d", i), DeviceID: "D"}
		if _, err := s.Rooms.Join(ctx, roomID, users[i], room.MemberProfile{}, ""); err != nil {
			b.Fatal(err)
		}
	}
	first, err := s.Sync.Sync(ctx, hsync.Request{UserID: users[0].UserID, Localpart: users[0].Localpart, DeviceID: "D", Filter: f})
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan int, receivers)
	for _, u := range users {
		req := hsync.Request{UserID: u.UserID, Localpart: u.Localpart, DeviceID: u.DeviceID, Filter: f,
			Since: first.NextBatch, Timeout: time.Minute}
		go func() {
			var buf []byte
			for {
				resp, err := s.Sync.Sync(ctx, req)
				if err != nil {
					return // the benchmark ended
				}
				buf = resp.AppendJSON(buf[:0]) // what a transport writes
				req.Since = resp.NextBatch
				n := 0
				if jr := resp.Rooms.Join[roomID]; jr != nil {
					n = len(jr.Timeline.Events) // after the first token only messages are sent
				}
				got <- n
			}
		}()
	}
	body := json.RawMessage(`{"msgtype":"m.text","body":"fan-out"}`)
	wait := func(n int) (responses int) {
		limit := time.NewTimer(time.Minute) // one per message: the harness's cost per response stays small
		defer limit.Stop()
		for n > 0 {
			select {
			case k := <-got:
				n -= k
				responses++
			case <-limit.C:
				b.Fatalf("%d deliveries missing after a minute", n)
			}
		}
		return responses
	}
	writeHeap := func(after bool) {
		if *fanOutMemProfile == "" {
			return
		}
		name := *fanOutMemProfile
		if !after {
			name += ".start"
		}
		f, err := os.Create(name)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
	}
	send := func() error {
		_, err := s.Rooms.Send(ctx, roomID, alice, "m.room.message", body)
		return err
	}
	servertest.FanOut(b, send, func() int { return wait(receivers) }, got, *fanOutProfile, writeHeap)
}

var (
	fanOutProfile    = flag.String("fanout.cpuprofile", "", "BenchmarkFanOut: write a CPU profile of the timed part to this file")
	fanOutMemProfile = flag.String("fanout.memprofile", "", "BenchmarkFanOut: write the allocations before (FILE.start) and after the timed part (FILE): go tool pprof -diff_base FILE.start FILE")
)
