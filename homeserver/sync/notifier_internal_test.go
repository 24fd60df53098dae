package sync

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestNotifierSkipsQuietBatches: the notifier reads membership changes only for positions no
// notice vouches for (the room writer's batches without member events): notices that cover the
// new positions, in any order and split across wake-ups, cost no read; a gap or a notice without
// the claim does.
func TestNotifierSkipsQuietBatches(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		n, err := NewNotifier(context.Background(), s, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		quiet := func(after, pos int64) notice {
			return notice{RoomID: "!r:test.local", Pos: pos, After: after, NoMembers: true}
		}
		step := func(what string, pos, reads int64, ns ...notice) {
			t.Helper()
			n.pendingMu.Lock() // one wake-up for all of them
			n.pending = append(n.pending, ns...)
			n.pendingMu.Unlock()
			n.kick <- struct{}{}
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				n.roomsMu.RLock()
				at := n.lastPos
				n.roomsMu.RUnlock()
				if at == pos {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: the notifier is at %d, want %d", what, at, pos)
				}
			}
			if got := n.membershipReads.Load(); got != reads {
				t.Fatalf("%s: %d reads of membership changes, want %d", what, got, reads)
			}
		}
		step("a quiet batch", 3, 0, quiet(0, 3))
		step("position 4 vouched for by nobody", 6, 1, quiet(4, 6))
		step("two quiet batches, the later one first", 9, 1, quiet(8, 9), quiet(6, 8))
		step("a batch's first room", 11, 1, quiet(9, 11))
		step("the same batch's second room", 12, 1, quiet(9, 12))
		step("a batch that may hold member events", 13, 2, notice{RoomID: "!r:test.local", Pos: 13})
	})
}

// TestWakeSetWakesEveryone: a wake-up of more users than a chunk, with users in it who do not
// listen, wakes every listener, whatever the chunk each falls in, once; those who listen again
// afterwards wait for the next wake-up.
func TestWakeSetWakesEveryone(t *testing.T) {
	n := &Notifier{users: map[string]*signal{}}
	set := map[string]struct{}{}
	var ls []Listener
	for i := range 5*wakeChunk + 3 {
		u := fmt.Sprintf("@u%d:test.local", i)
		set[u] = struct{}{}
		if i%3 != 0 { // every third user has no long poll
			ls = append(ls, n.Listen(u))
		}
	}
	n.wakeSet(set)
	for i, l := range ls {
		select {
		case <-l.C:
		default:
			t.Fatalf("listener %d of %d not woken", i, len(ls))
		}
		l.Release()
	}
	again := n.Listen("@u1:test.local")
	defer again.Release()
	select {
	case <-again.C:
		t.Fatal("a new listener found the old wake-up")
	default:
	}
}
