package typing_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/typing"
)

// fed records what a node tells federation.
type fed struct {
	mu      gosync.Mutex
	notices []string
}

func (f *fed) Typing(roomID, userID string, typing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := roomID + " " + userID + " stop"
	if typing {
		s = roomID + " " + userID + " start"
	}
	f.notices = append(f.notices, s)
}

func (f *fed) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.notices)
}

// TestFederation: only the node where a local user's typing changed tells federation (start, stop,
// expiry, refresh while still typing); a remote user's typing (Remote) reaches every node, expires,
// is refused for non-members, and is never told to federation again.
func TestFederation(t *testing.T) {
	defer typing.SetFedRefresh(150 * time.Millisecond)()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := bus.Start(context.Background(), bus.Options{StoreDir: t.TempDir(), Name: "typing-fed-test"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fa, fb := &fed{}, &fed{}
	a, err := typing.New(b, "a", &waker{rooms: map[string]int{}}, members{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.SetFederation(fa)
	nb, err := typing.New(b, "b", &waker{rooms: map[string]int{}}, members{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	nb.SetFederation(fb)
	ctx := context.Background()

	// Start and stop on node a: a tells federation, b (which hears it on the bus) does not.
	if err := a.Set(ctx, "!r:x", "@alice:x", true, time.Minute); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 2*time.Second, func() bool { return len(nb.Typing("!r:x")) == 1 })
	// Still typing: refreshed to federation every fedRefresh.
	checkFor(t, 2*time.Second, func() bool { return len(fa.got()) >= 3 })
	if err := a.Set(ctx, "!r:x", "@alice:x", false, 0); err != nil {
		t.Fatal(err)
	}
	got := fa.got()
	for _, n := range got[:len(got)-1] {
		if n != "!r:x @alice:x start" {
			t.Fatalf("notices while typing: %v", got)
		}
	}
	if got[len(got)-1] != "!r:x @alice:x stop" {
		t.Fatalf("last notice: %v", got)
	}
	time.Sleep(300 * time.Millisecond) // no refresh after the stop
	if n := len(fa.got()); n != len(got) {
		t.Errorf("notices after the stop: %v", fa.got()[len(got):])
	}

	// A timeout ends it: federation is told.
	if err := a.Set(ctx, "!r:x", "@carol:x", true, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 2*time.Second, func() bool { return slices.Contains(fa.got(), "!r:x @carol:x stop") })

	// A remote user: shown on both nodes, never told to federation.
	if err := nb.Remote(ctx, "!r:x", "@stranger:x", true); !errors.Is(err, spec.ErrForbidden) {
		t.Errorf("remote typing of a non-member: %v", err)
	}
	if err := nb.Remote(ctx, "!r:x", "@bob:y", true); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 2*time.Second, func() bool {
		return slices.Equal(a.Typing("!r:x"), []string{"@bob:y"}) && slices.Equal(nb.Typing("!r:x"), []string{"@bob:y"})
	})
	if err := nb.Remote(ctx, "!r:x", "@bob:y", false); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 2*time.Second, func() bool { return len(a.Typing("!r:x")) == 0 && len(nb.Typing("!r:x")) == 0 })
	if got := fb.got(); len(got) != 0 {
		t.Errorf("node b told federation: %v", got)
	}
	for _, n := range fa.got() {
		if n == "!r:x @bob:y start" || n == "!r:x @bob:y stop" {
			t.Errorf("a remote user's typing was told to federation: %v", fa.got())
		}
	}
}
