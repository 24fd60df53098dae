package federation_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// largeRoomMembers is the number of joined members of BenchmarkJoinLargeRoom's room.
const largeRoomMembers = 5000

// BenchmarkJoinLargeRoom measures a join over federation of a room with 5,000 joined members:
// a user of a fresh server asks hs1 to join (POST /join/{roomId}?via=hs1), which runs make_join
// and send_join against hs1 (hs1 authorises the join and answers the state before it, ~5,000
// events, with its auth chain); the joining server verifies every event's signature and hash,
// checks each against its auth events and stores the state, the auth chain and the join in one
// transaction. One op is one whole join as the client sees it, both servers in this process
// (so the time and memory are those of both sides together).
//
// The room is built once per run: alice@hs1 creates it and 5,000 users of hs1 join it through
// the room service (their events are ordinary signed joins; no accounts are registered). Each
// iteration starts a new joining server (its name differs, so hs1 fetches its key as it would
// for a stranger), outside the timer, and makes its user leave again afterwards (so the room's
// state grows by one leave per iteration).
//
// Metrics besides ns/op: peak-heap-MB (the highest HeapInuse seen during the join, sampled every
// 5 ms, above the level after a GC just before it), alloc-MB/op (TotalAlloc during the join) and
// state-events (what the joining server holds afterwards). HS_BENCH_CPUPROFILE=file writes a CPU
// profile of the timed joins only (the room's construction left out):
//
//	go test ./federation -run '^$' -bench JoinLargeRoom -benchtime 3x
func BenchmarkJoinLargeRoom(b *testing.B) {
	for _, backend := range storagetest.Backends {
		b.Run(backend, func(b *testing.B) { benchJoinLargeRoom(b, backend) })
	}
}

func benchJoinLargeRoom(b *testing.B, backend string) {
	ctx := context.Background()
	ca := servertest.NewCA(b)
	hs1 := servertest.Start(b, backend, servertest.Federated(b, ca, ip1), fastRetry)
	name1 := hs1.Config.ServerName
	alice := hs1.Register(b, "alice", "alice-password-1")
	res := hs1.Do(b, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat", "name": "Large"})
	if res.Status != 200 {
		b.Fatalf("createRoom: %d %s", res.Status, res.Raw)
	}
	roomID := res.Str("room_id")
	start := time.Now()
	servertest.JoinMembers(b, hs1.Rooms, roomID, hs1.Config.ServerName, largeRoomMembers)
	b.Logf("%s: %d members joined in %v", backend, largeRoomMembers, time.Since(start).Round(time.Millisecond))

	var profile *os.File
	if path := os.Getenv("HS_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		profile = f
	}
	var peak, alloc uint64
	var stateEvents int
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		// A new address each time: a port can be handed out again, and a server name that came
		// back with another key would not be a stranger's first join.
		ip := fmt.Sprintf("127.0.0.%d", 10+i%240)
		hs2 := servertest.Start(b, backend, servertest.Federated(b, ca, ip), fastRetry)
		bob := hs2.Register(b, "bob", "bob-password-12")
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := sampleHeap()
		if profile != nil {
			if err := pprof.StartCPUProfile(profile); err != nil && i == 0 {
				b.Fatal(err)
			}
		}
		b.StartTimer()

		join := hs2.Do(b, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?via="+url.QueryEscape(name1), bob.AccessToken, map[string]any{})

		b.StopTimer()
		if profile != nil {
			pprof.StopCPUProfile()
			profile = nil // one profile per run: a second Start would append a second header
		}
		maxInuse := stop()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if join.Status != 200 || join.Str("room_id") != roomID {
			b.Fatalf("join: %d %s", join.Status, join.Raw)
		}
		if maxInuse > before.HeapInuse {
			peak += maxInuse - before.HeapInuse
		}
		alloc += after.TotalAlloc - before.TotalAlloc
		state, err := hs2.Store.Read().CurrentState(ctx, roomID)
		if err != nil {
			b.Fatal(err)
		}
		stateEvents = len(state)
		// alice, the 5,000, this bob and the bobs who left before him.
		if members := countMembers(state); members != largeRoomMembers+2+i {
			b.Fatalf("the joining server has %d members in its state, want %d", members, largeRoomMembers+2+i)
		}
		// bob leaves, so that hs1 sends nothing more to his server. The server keeps running
		// until the end: the next joining servers check his leave's signature with its key.
		if r := hs2.Do(b, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", bob.AccessToken, map[string]any{}); r.Status != 200 {
			b.Fatalf("leave: %d %s", r.Status, r.Raw)
		}
		servertest.Eventually(b, 30*time.Second, func() error {
			if m, err := hs1.Rooms.CurrentMembership(ctx, roomID, bob.UserID); err != nil || m != room.MembershipLeave {
				return fmt.Errorf("bob's membership on hs1: %q, %v", m, err)
			}
			return nil
		})
		i++
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/float64(i)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(alloc)/float64(i)/(1<<20), "alloc-MB/op")
	b.ReportMetric(float64(stateEvents), "state-events")
}

func countMembers(state storage.StateMap) int {
	n := 0
	for k := range state {
		if k.Type == room.TypeMember {
			n++
		}
	}
	return n
}

// sampleHeap records the highest HeapInuse until the returned function is called, which returns it.
func sampleHeap() func() uint64 {
	done := make(chan struct{})
	result := make(chan uint64)
	go func() {
		var m runtime.MemStats
		var peak uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-done:
				result <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		return <-result
	}
}
