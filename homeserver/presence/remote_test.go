package presence_test

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
	"github.com/hearthmx/homeserver/homeserver/presence"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

type nopWaker struct{}

func (nopWaker) WakeSharing(...string) {}

// fed records what a node tells federation.
type fed struct {
	mu   gosync.Mutex
	sent []string // user presence status_msg currently_active
}

func (f *fed) Presence(userID string, st presence.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := userID + " " + st.Presence
	if st.StatusMsg != nil {
		s += " " + *st.StatusMsg
	}
	if st.CurrentlyActive != nil && *st.CurrentlyActive {
		s += " active"
	}
	f.sent = append(f.sent, s)
}

func (f *fed) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

func everyone([]string) (map[string]bool, bool) {
	return map[string]bool{"@alice:x": true, "@bob:y": true}, true
}

func eventually(t *testing.T, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFederation: local users' real changes (set, sync, timeouts) are told to federation, once
// each and only by the node that made them; a remote user's state (Remote) is shown as sent on
// every node, with no timeouts of ours, is not stored, and is never told back to federation.
func TestFederation(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, store *storage.Store) {
		ctx := context.Background()
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		b, err := bus.Start(ctx, bus.Options{StoreDir: t.TempDir(), Name: "presence-fed-test"}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		opts := presence.Options{Enabled: true, Visibility: presence.VisibleEveryone,
			IdleTimeout: 150 * time.Millisecond, OfflineTimeout: 300 * time.Millisecond}
		fa, fb := &fed{}, &fed{}
		a, err := presence.New(ctx, opts, store, b, "a", nopWaker{}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		a.SetFederation(fa)
		nb, err := presence.New(ctx, opts, store, b, "b", nopWaker{}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer nb.Close()
		nb.SetFederation(fb)

		// A local user: a change is told, a repeat is not; the timeouts are told by node a only.
		if err := a.Set(ctx, "@alice:x", presence.Online, "hi"); err != nil {
			t.Fatal(err)
		}
		if err := a.Set(ctx, "@alice:x", presence.Online, "hi"); err != nil {
			t.Fatal(err)
		}
		a.Syncing("@alice:x", "")() // online already: nothing to tell
		if got := fa.got(); len(got) != 1 || got[0] != "@alice:x online hi active" {
			t.Fatalf("told %q", got)
		}
		eventually(t, func() bool { return len(fa.got()) == 3 })
		if got := fa.got(); got[1] != "@alice:x unavailable hi" || got[2] != "@alice:x offline hi" {
			t.Errorf("timeouts told %q", got)
		}

		// A remote user.
		if err := a.Remote("@bob:y", "away", "", 0, false); !errors.Is(err, spec.ErrInvalidParam) {
			t.Errorf("unknown presence: %v", err)
		}
		before := nb.Position(0)
		if err := a.Remote("@bob:y", presence.Unavailable, "lunch", 5000, false); err != nil {
			t.Fatal(err)
		}
		var st presence.Status
		eventually(t, func() bool {
			st, err = nb.Get(ctx, "@alice:x", "@bob:y")
			return err == nil && st.Presence == presence.Unavailable
		})
		if st.StatusMsg == nil || *st.StatusMsg != "lunch" || st.LastActiveAgo == nil || *st.LastActiveAgo < 5000 ||
			*st.LastActiveAgo > 60_000 || st.CurrentlyActive == nil || *st.CurrentlyActive {
			t.Errorf("node b shows %+v", st)
		}
		// (node b may also time alice out meanwhile: it applies the timeouts by itself)
		evs, err := nb.Changed(ctx, "@alice:x", before, nb.Position(0), everyone)
		if err != nil || !slices.ContainsFunc(evs, func(e presence.Event) bool { return e.Sender == "@bob:y" }) {
			t.Errorf("changed on node b: %+v %v", evs, err)
		}
		// currently_active alone is a change.
		before = a.Position(0)
		if err := a.Remote("@bob:y", presence.Unavailable, "lunch", 0, true); err != nil {
			t.Fatal(err)
		}
		evs, err = a.Changed(ctx, "@alice:x", before, a.Position(0), everyone)
		if err != nil || len(evs) != 1 || evs[0].Content.CurrentlyActive == nil || !*evs[0].Content.CurrentlyActive {
			t.Errorf("currently_active change: %+v %v", evs, err)
		}
		// No timeouts for it, on either node.
		time.Sleep(2 * opts.OfflineTimeout)
		for _, n := range []*presence.Service{a, nb} {
			if st, err := n.Get(ctx, "@alice:x", "@bob:y"); err != nil || st.Presence != presence.Unavailable {
				t.Errorf("remote user after the timeouts: %+v %v", st, err)
			}
		}
		if got := fa.got(); len(got) != 3 {
			t.Errorf("node a told %q", got)
		}
		if got := fb.got(); len(got) != 0 {
			t.Errorf("node b told %q", got)
		}
		// Stored: alice only.
		a.Close()
		nb.Close()
		rows, err := store.Read().AllPresence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.UserID == "@bob:y" {
				t.Errorf("the remote user was stored: %+v", r)
			}
		}

		// Disabled: nothing told, nothing applied.
		off, err := presence.New(ctx, presence.Options{Visibility: presence.VisibleEveryone}, store, nil, "c", nopWaker{}, log)
		if err != nil {
			t.Fatal(err)
		}
		fc := &fed{}
		off.SetFederation(fc)
		if err := off.Set(ctx, "@alice:x", presence.Online, ""); err != nil {
			t.Fatal(err)
		}
		if err := off.Remote("@bob:y", presence.Online, "", 0, true); err != nil {
			t.Fatal(err)
		}
		if st, _ := off.Get(ctx, "@alice:x", "@bob:y"); st.Presence != presence.Offline || len(fc.got()) != 0 {
			t.Errorf("disabled: %+v, told %q", st, fc.got())
		}
	})
}
