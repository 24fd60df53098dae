package receipt_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	gosync "sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/receipt"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

const remoteUser = "@bob:remote.test"

// rooms is the real room service, except that remoteUser is joined everywhere (no second server
// needed to test the receipt side alone).
type rooms struct{ *room.Service }

func (r rooms) CurrentMembership(ctx context.Context, roomID, userID string) (string, error) {
	if userID == remoteUser {
		return room.MembershipJoin, nil
	}
	return r.Service.CurrentMembership(ctx, roomID, userID)
}

// fed records what the service tells federation.
type fed struct {
	mu   gosync.Mutex
	sent []string
}

func (f *fed) Receipt(_ context.Context, roomID, userID, eventID, threadID string, ts int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ts <= 0 {
		return fmt.Errorf("no ts")
	}
	f.sent = append(f.sent, roomID+" "+userID+" "+eventID+" "+threadID)
	return nil
}

func (f *fed) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

// TestFederation: only public m.read receipts that moved forward are told to federation; a remote
// user's receipt is stored (forward only, for events of the room this server has), reaches local
// members' /sync, and is refused for non-members, unknown events, events of other rooms and a
// wrong thread.
func TestFederation(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		ctx := context.Background()
		alice := s.Register(t, "alice", "password-alice")
		mkRoom := func() string {
			res := s.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{})
			if res.Status != http.StatusOK {
				t.Fatalf("createRoom: %d %s", res.Status, res.Raw)
			}
			return res.Str("room_id")
		}
		send := func(roomID, txn string) string {
			res := s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn,
				alice.AccessToken, map[string]any{"msgtype": "m.text", "body": txn})
			if res.Status != http.StatusOK {
				t.Fatalf("send: %d %s", res.Status, res.Raw)
			}
			return res.Str("event_id")
		}
		roomID, other := mkRoom(), mkRoom()
		m1, m2 := send(roomID, "t1"), send(roomID, "t2")
		elsewhere := send(other, "t3")

		f := &fed{}
		svc := receipt.New(s.Store, s.Bus, rooms{s.Rooms}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		svc.SetFederation(f)
		u := receipt.User{UserID: alice.UserID, Localpart: alice.Localpart}
		main := receipt.ThreadMain
		for _, m := range []receipt.Mark{
			{Type: receipt.TypeRead, EventID: m2},                  // told
			{Type: receipt.TypeRead, EventID: m1},                  // backwards: not told
			{Type: receipt.TypeReadPrivate, EventID: m2},           // private: never told
			{Type: receipt.TypeRead, EventID: m2, ThreadID: &main}, // threaded: told with its thread
		} {
			if err := svc.Post(ctx, u, roomID, m); err != nil {
				t.Fatal(err)
			}
		}
		if err := svc.ReadMarkers(ctx, u, roomID, m2, "", m1); err != nil {
			t.Fatal(err)
		}
		want := []string{roomID + " " + alice.UserID + " " + m2 + " ", roomID + " " + alice.UserID + " " + m2 + " main"}
		if got := f.got(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("told federation %q, want %q", got, want)
		}

		// A remote user's receipt.
		stored, err := svc.Remote(ctx, roomID, remoteUser, m2, "", time.Now().Add(time.Hour).UnixMilli())
		if err != nil || !stored {
			t.Fatalf("remote receipt: %v %v", stored, err)
		}
		if stored, err := svc.Remote(ctx, roomID, remoteUser, m1, "", 0); err != nil || stored {
			t.Errorf("a receipt moving backwards: stored %v, %v", stored, err)
		}
		for _, c := range []struct {
			name, roomID, user, event, thread string
			want                              error
		}{
			{"not a member", roomID, "@eve:remote.test", m2, "", spec.ErrForbidden},
			{"unknown event", roomID, remoteUser, "$nope", "", spec.ErrNotFound},
			{"event of another room", roomID, remoteUser, elsewhere, "", spec.ErrNotFound},
			{"wrong thread", roomID, remoteUser, m2, m1, spec.ErrInvalidParam},
		} {
			if _, err := svc.Remote(ctx, c.roomID, c.user, c.event, c.thread, 0); !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, err, c.want)
			}
		}
		rs, err := s.Store.Read().ReceiptsSince(ctx, []string{roomID}, 0, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		var bobs []storage.Receipt
		for _, r := range rs {
			if r.UserID == remoteUser {
				bobs = append(bobs, r)
			}
		}
		if len(bobs) != 1 || bobs[0].EventID != m2 || bobs[0].Type != receipt.TypeRead || bobs[0].ThreadID != "" ||
			bobs[0].TS > time.Now().UnixMilli() {
			t.Fatalf("stored receipts of the remote user: %+v", bobs)
		}
		if got := f.got(); len(got) != 2 {
			t.Errorf("a remote user's receipt was told to federation: %q", got)
		}

		// Alice's /sync shows it.
		servertest.Eventually(t, 5*time.Second, func() error {
			res := s.Do(t, "GET", "/_matrix/client/v3/sync", alice.AccessToken, nil)
			var body struct {
				Rooms struct {
					Join map[string]struct {
						Ephemeral struct {
							Events []struct {
								Type    string                                           `json:"type"`
								Content map[string]map[string]map[string]json.RawMessage `json:"content"`
							} `json:"events"`
						} `json:"ephemeral"`
					} `json:"join"`
				} `json:"rooms"`
			}
			if err := json.Unmarshal(res.Raw, &body); err != nil {
				return err
			}
			for _, e := range body.Rooms.Join[roomID].Ephemeral.Events {
				if _, ok := e.Content[m2][receipt.TypeRead][remoteUser]; e.Type == "m.receipt" && ok {
					return nil
				}
			}
			return fmt.Errorf("no receipt of %s in %s", remoteUser, res.Raw)
		})
	})
}
