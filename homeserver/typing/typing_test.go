package typing_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/typing"
)

type members struct{}

func (members) CurrentMembership(_ context.Context, _, userID string) (string, error) {
	if userID == "@stranger:x" {
		return "leave", nil
	}
	return "join", nil
}

// waker counts the wake-ups of each room.
type waker struct {
	mu    gosync.Mutex
	rooms map[string]int
}

func (w *waker) WakeRoom(roomID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rooms[roomID]++
}

func (w *waker) count(roomID string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rooms[roomID]
}

func checkFor(t *testing.T, total time.Duration, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(total)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two nodes on one bus keep the same typing map; each expires it by itself and wakes its syncers.
func TestTwoNodes(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := bus.Start(context.Background(), bus.Options{StoreDir: t.TempDir(), Name: "typing-test"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	wa, wb := &waker{rooms: map[string]int{}}, &waker{rooms: map[string]int{}}
	a, err := typing.New(b, "a", wa, members{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	nb, err := typing.New(b, "b", wb, members{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()

	ctx := context.Background()
	if err := a.Set(ctx, "!r:x", "@stranger:x", true, time.Second); err == nil {
		t.Error("a non-member may type")
	}
	before := nb.Position(0)
	if err := a.Set(ctx, "!r:x", "@alice:x", true, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 2*time.Second, func() bool { return slices.Equal(nb.Typing("!r:x"), []string{"@alice:x"}) })
	if got := nb.Changed([]string{"!r:x"}, before); !slices.Equal(got["!r:x"], []string{"@alice:x"}) {
		t.Errorf("changed since %d on node b: %v", before, got)
	}
	started := nb.Position(0)
	// A refresh moves nothing.
	if err := a.Set(ctx, "!r:x", "@alice:x", true, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := a.Changed([]string{"!r:x"}, a.Position(0)); len(got) != 0 {
		t.Errorf("a refresh changed the list: %v", got)
	}
	// Both nodes expire it by themselves, and report the empty list as a change.
	checkFor(t, 2*time.Second, func() bool { return len(a.Typing("!r:x")) == 0 && len(nb.Typing("!r:x")) == 0 })
	if got, ok := nb.Changed([]string{"!r:x"}, started)["!r:x"]; !ok || len(got) != 0 {
		t.Errorf("expiry on node b: %v %v", got, ok)
	}
	if wa.count("!r:x") != 2 || wb.count("!r:x") != 2 {
		t.Errorf("wake-ups: node a %d, node b %d; want 2 each (start, expiry)", wa.count("!r:x"), wb.count("!r:x"))
	}
}
