package room_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func newService(t *testing.T, s *storage.Store, v event.Version) *room.Service {
	_, priv, _ := ed25519.GenerateKey(nil)
	svc := room.New(s, nil, room.Options{ServerName: "test.local", Key: signing.Key{ID: "ed25519:a_test", Private: priv}, DefaultVersion: v},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(svc.Close)
	return svc
}

func sender(user string) room.Sender {
	return room.Sender{UserID: user, Localpart: user[1:5], DeviceID: "DEV"}
}

// TestCreateSendAuth creates rooms of every version, sends from members and non-members, and checks
// what the auth rules let through and what is stored.
func TestCreateSendAuth(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		for _, v := range event.Versions {
			t.Run("v"+v.ID(), func(t *testing.T) {
				svc := newService(t, s, v)
				alice, bob := "@alice:test.local", "@bob:test.local"
				roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice, Name: "Room", Topic: "Chat", Invite: []string{bob},
					Preset: room.PresetPrivateChat, CreatorProfile: room.MemberProfile{DisplayName: "Alice"}})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := svc.Send(ctx, roomID, sender(alice), "m.room.message", json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)); err != nil {
					t.Fatalf("creator send: %v", err)
				}
				// bob is invited, not joined: he may not send.
				_, err = svc.Send(ctx, roomID, sender(bob), "m.room.message", json.RawMessage(`{"msgtype":"m.text","body":"x"}`))
				if !errors.Is(err, spec.ErrForbidden) {
					t.Fatalf("invited user send: %v", err)
				}
				if _, err := svc.Membership(ctx, roomID, sender(bob), bob, "join", "", room.MemberProfile{}, false); err != nil {
					t.Fatalf("join: %v", err)
				}
				if _, err := svc.Send(ctx, roomID, sender(bob), "m.room.message", json.RawMessage(`{"msgtype":"m.text","body":"x"}`)); err != nil {
					t.Fatalf("member send: %v", err)
				}
				// bob has power 0: he may not change the name (state_default 50).
				_, err = svc.SetState(ctx, roomID, sender(bob), "m.room.name", "", json.RawMessage(`{"name":"mine"}`))
				if !errors.Is(err, spec.ErrForbidden) {
					t.Fatalf("unprivileged state: %v", err)
				}
				cur, err := s.Read().CurrentState(ctx, roomID)
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range []storage.StateKey{{Type: "m.room.create"}, {Type: "m.room.name"}, {Type: "m.room.topic"},
					{Type: "m.room.member", StateKey: alice}, {Type: "m.room.member", StateKey: bob}, {Type: "m.room.join_rules"}} {
					if cur[k] == "" {
						t.Errorf("current state lacks %v", k)
					}
				}
				if v.RoomIDFromCreateEvent() && roomID != "!"+cur[storage.StateKey{Type: "m.room.create"}][1:] {
					t.Errorf("v12 room ID %s is not the create event's hash %s", roomID, cur[storage.StateKey{Type: "m.room.create"}])
				}
			})
		}
	})
}

// TestTxnIDIdempotent sends the same txn ID concurrently and sequentially: one event.
func TestTxnIDIdempotent(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc := newService(t, s, event.V11)
		alice := "@alice:test.local"
		roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice})
		if err != nil {
			t.Fatal(err)
		}
		from := sender(alice)
		from.TxnID = "txn1"
		ids := make([]string, 10)
		errs := make([]error, 10)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i], errs[i] = svc.Send(ctx, roomID, from, "m.room.message", json.RawMessage(fmt.Sprintf(`{"body":"%d"}`, i)))
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range ids {
			if id != ids[0] || id == "" {
				t.Fatalf("txn ids gave different events: %v", ids)
			}
		}
		// Retries of a stored transaction, new ones and a state event in the same batches: the
		// batch's lookup of stored IDs, its own new IDs and a flush in the middle agree.
		var mu sync.Mutex
		got := map[string]map[string]bool{}
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f := from
				f.TxnID = []string{"txn1", "txn2", "txn3"}[i%3]
				if i%7 == 0 {
					if _, err := svc.SetState(ctx, roomID, sender(alice), "m.room.topic", "", json.RawMessage(fmt.Sprintf(`{"topic":"%d"}`, i))); err != nil {
						t.Error(err)
					}
				}
				id, err := svc.Send(ctx, roomID, f, "m.room.message", json.RawMessage(fmt.Sprintf(`{"body":"r%d"}`, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if got[f.TxnID] == nil {
					got[f.TxnID] = map[string]bool{}
				}
				got[f.TxnID][id] = true
			}()
		}
		wg.Wait()
		if len(got["txn1"]) != 1 || !got["txn1"][ids[0]] || len(got["txn2"]) != 1 || len(got["txn3"]) != 1 {
			t.Fatalf("retried transactions gave events %v (first txn1 event %s)", got, ids[0])
		}
		from.DeviceID = "OTHER"
		other, err := svc.Send(ctx, roomID, from, "m.room.message", json.RawMessage(`{"body":"x"}`))
		if err != nil || other == ids[0] {
			t.Fatalf("same txn from another device: %s %v", other, err)
		}
	})
}

// TestTxnIDAfterRestart: a service started on the same database finds the events of the
// transaction IDs used before it (a client's retry after a crash or restart): a plain send, an
// edit (serial path) and a redaction; the same ID for another event type is a new request. An ID
// is forgotten after a day, also by a service that stays up.
func TestTxnIDAfterRestart(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		_, priv, _ := ed25519.GenerateKey(nil)
		var offset atomic.Int64 // added to the clock
		start := func() *room.Service {
			svc := room.New(s, nil, room.Options{ServerName: "test.local", Key: signing.Key{ID: "ed25519:a_test", Private: priv}, DefaultVersion: event.V11},
				slog.New(slog.NewTextHandler(io.Discard, nil)))
			svc.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
			return svc
		}
		alice := "@alice:test.local"
		with := func(txn string) room.Sender {
			f := sender(alice)
			f.TxnID = txn
			return f
		}
		msg := json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)
		svc := start()
		roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice})
		if err != nil {
			t.Fatal(err)
		}
		sent, err := svc.Send(ctx, roomID, with("t1"), "m.room.message", msg)
		if err != nil {
			t.Fatal(err)
		}
		edit := json.RawMessage(`{"msgtype":"m.text","body":"* hello","m.new_content":{"msgtype":"m.text","body":"hello"},` +
			`"m.relates_to":{"rel_type":"m.replace","event_id":"` + sent + `"}}`)
		edited, err := svc.Send(ctx, roomID, with("t2"), "m.room.message", edit)
		if err != nil {
			t.Fatal(err)
		}
		redaction, err := svc.Redact(ctx, roomID, with("t3"), edited, "")
		if err != nil {
			t.Fatal(err)
		}
		svc.Close()

		svc = start()
		for _, c := range []struct {
			txn, want string
			send      func() (string, error)
		}{
			{"t1", sent, func() (string, error) { return svc.Send(ctx, roomID, with("t1"), "m.room.message", msg) }},
			{"t2", edited, func() (string, error) { return svc.Send(ctx, roomID, with("t2"), "m.room.message", edit) }},
			{"t3", redaction, func() (string, error) { return svc.Redact(ctx, roomID, with("t3"), edited, "") }},
		} {
			if got, err := c.send(); err != nil || got != c.want {
				t.Errorf("retry of %s after a restart: %s, %v; want %s", c.txn, got, err, c.want)
			}
		}
		other, err := svc.Send(ctx, roomID, with("t1"), "m.custom", msg)
		if err != nil || other == sent {
			t.Errorf("t1 for another event type: %s, %v; want a new event", other, err)
		}
		// A day later, on the running service: t1 is new again.
		offset.Store(int64(25 * time.Hour))
		if _, err := svc.Send(ctx, roomID, with("t4"), "m.room.message", msg); err != nil {
			t.Fatal(err)
		}
		if again, err := svc.Send(ctx, roomID, with("t1"), "m.room.message", msg); err != nil || again == sent {
			t.Errorf("t1 a day later: %s, %v; want a new event", again, err)
		}
		svc.Close()
		// And on one started a day later: t2 is forgotten, t4 (sent "a day later") is not.
		svc = start()
		defer svc.Close()
		if again, err := svc.Send(ctx, roomID, with("t2"), "m.room.message", edit); err != nil || again == edited {
			t.Errorf("t2 a day later after a restart: %s, %v; want a new event", again, err)
		}
	})
}

// TestTrustedPrivateChatV12 checks that invitees of a v12 trusted private chat become additional
// creators rather than power-level users (creators may not appear in power levels).
func TestTrustedPrivateChatV12(t *testing.T) {
	s := storagetest.Open(t, "sqlite")
	ctx := context.Background()
	svc := newService(t, s, event.V12)
	alice, bob := "@alice:test.local", "@bob:test.local"
	roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice, Invite: []string{bob}, Preset: room.PresetTrustedPrivateChat})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.Read().CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.Read().Events(ctx, []string{cur[storage.StateKey{Type: "m.room.create"}], cur[storage.StateKey{Type: "m.room.power_levels"}]})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		var ev struct {
			Content map[string]any `json:"content"`
		}
		_ = json.Unmarshal(e.ClientJSON, &ev)
		switch e.Type {
		case "m.room.create":
			if fmt.Sprint(ev.Content["additional_creators"]) != "["+bob+"]" {
				t.Errorf("additional_creators: %v", ev.Content["additional_creators"])
			}
		case "m.room.power_levels":
			if users, _ := ev.Content["users"].(map[string]any); users[bob] != nil {
				t.Errorf("an additional creator in power levels: %v", users)
			}
		}
	}
}

// TestTimelineEventsSignedOnDemand: state events are stored signed; timeline events are stored
// unsigned and SignPDU signs them with the server's key, keeping their event ID.
func TestTimelineEventsSignedOnDemand(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		pub, priv, _ := ed25519.GenerateKey(nil)
		svc := room.New(s, nil, room.Options{ServerName: "test.local", Key: signing.Key{ID: "ed25519:a_test", Private: priv}, DefaultVersion: event.V11},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		t.Cleanup(svc.Close)
		getKey := func(_ context.Context, server, keyID string, _ int64) (ed25519.PublicKey, error) {
			if server != "test.local" || keyID != "ed25519:a_test" {
				return nil, fmt.Errorf("unknown key %s %s", server, keyID)
			}
			return pub, nil
		}
		alice := "@alice:test.local"
		roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice, Preset: room.PresetPrivateChat})
		if err != nil {
			t.Fatal(err)
		}
		msgID, err := svc.Send(ctx, roomID, sender(alice), "m.room.message", json.RawMessage(`{"msgtype":"m.text","body":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		stored := func(id string) *event.PDU {
			t.Helper()
			e, err := s.Read().Event(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			p, err := event.Parse(event.V11, e.PDU)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		msg := stored(msgID)
		if len(msg.Signatures) != 0 {
			t.Errorf("timeline event stored with signatures %v", msg.Signatures)
		}
		raw, err := svc.SignPDU(msg)
		if err != nil {
			t.Fatal(err)
		}
		signed, err := event.Parse(event.V11, raw)
		if err != nil {
			t.Fatal(err)
		}
		if signed.EventID != msgID {
			t.Fatalf("signing changed the event ID: %s -> %s", msgID, signed.EventID)
		}
		if err := event.VerifyEventSignatures(ctx, event.V11, signed, getKey); err != nil {
			t.Fatalf("signed timeline event: %v", err)
		}
		cur, err := s.Read().CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		create := stored(cur[storage.StateKey{Type: "m.room.create"}])
		if err := event.VerifyEventSignatures(ctx, event.V11, create, getKey); err != nil {
			t.Fatalf("stored state event: %v", err)
		}
	})
}
