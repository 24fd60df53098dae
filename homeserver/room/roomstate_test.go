package room

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestFailedJobLeavesNoState runs jobs that change a room's state and then fail, alone and in a
// batch between jobs that succeed, and a batch that fails as a whole: the jobs share the cached
// room's state map (share), so each failure must bring the map back to the state before the
// failed job, which later jobs of the batch and later batches see, and which must equal the
// database's current state.
func TestFailedJobLeavesNoState(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		s := newTestService(t, st)
		alice, bob := "@alice:test.local", "@bob:test.local"
		roomID, err := s.CreateRoom(ctx, CreateRequest{Creator: alice, Preset: PresetPublicChat, Topic: "one"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, roomID, Sender{UserID: bob, Localpart: "bob"}, MemberProfile{}, ""); err != nil {
			t.Fatal(err)
		}
		topic := func(text string) event.Proto {
			return event.Proto{Sender: alice, Type: "m.room.topic", StateKey: stateKeyPtr(""), Content: mustJSON(map[string]string{"topic": text})}
		}
		ban := event.Proto{Sender: alice, Type: TypeMember, StateKey: &bob, Content: mustJSON(map[string]string{"membership": MembershipBan})}
		appendAll := func(tx *txn, protos ...event.Proto) error {
			rs, err := tx.room(roomID)
			if err != nil {
				return err
			}
			for _, p := range protos {
				if _, err := tx.append(rs, p, appendOpts{}); err != nil {
					return err
				}
			}
			return nil
		}
		errBoom := errors.New("boom")
		// seen is what a job sees of the room: topic and bob's membership.
		seen := func(tx *txn) (string, string, error) {
			rs, err := tx.room(roomID)
			if err != nil {
				return "", "", err
			}
			var c struct{ Topic string }
			_ = json.Unmarshal(rs.state[StateKeyTuple{"m.room.topic", ""}].Content, &c)
			return c.Topic, rs.membership(bob), nil
		}
		// check compares the cached state with the database and with want.
		check := func(wantTopic, wantBob string) {
			t.Helper()
			var gotTopic, gotBob string
			err := s.write(ctx, func(tx *txn) error {
				var err error
				if gotTopic, gotBob, err = seen(tx); err != nil {
					return err
				}
				rs, _ := tx.room(roomID)
				cur, err := tx.c.CurrentState(ctx, roomID)
				if err != nil {
					return err
				}
				if len(cur) != len(rs.state) {
					t.Errorf("cached state has %d entries, the database %d", len(rs.state), len(cur))
				}
				for k, id := range cur {
					if ev := rs.state[StateKeyTuple(k)]; ev == nil || ev.EventID != id {
						t.Errorf("cached state %v differs from the database's %s", k, id)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if gotTopic != wantTopic || gotBob != wantBob {
				t.Fatalf("topic %q, bob %q; want %q, %q", gotTopic, gotBob, wantTopic, wantBob)
			}
		}

		// Alone: the topic and the ban are stored, then the job fails.
		err = s.write(ctx, func(tx *txn) error {
			if err := appendAll(tx, topic("two"), ban); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("failing job: %v", err)
		}
		check("one", MembershipJoin)
		if _, err := s.Send(ctx, roomID, Sender{UserID: bob, Localpart: "bob"}, "m.room.message", json.RawMessage(`{"body":"still here"}`)); err != nil {
			t.Fatalf("bob sends after the ban was rolled back: %v", err)
		}

		// In a batch: A succeeds, B fails after changing the state, C sees A's state.
		var cTopic, cBob string
		jobs := []*job{
			{ctx: ctx, fn: func(tx *txn) error { return appendAll(tx, topic("A")) }},
			{ctx: ctx, fn: func(tx *txn) error {
				if err := appendAll(tx, topic("B"), ban); err != nil {
					return err
				}
				return errBoom
			}},
			{ctx: ctx, fn: func(tx *txn) (err error) { cTopic, cBob, err = seen(tx); return err }},
		}
		runJobs(s, jobs)
		if got := jobErrs(jobs); got[0] != nil || !errors.Is(got[1], errBoom) || got[2] != nil {
			t.Fatalf("batch results: %v", got)
		}
		if cTopic != "A" || cBob != MembershipJoin {
			t.Fatalf("the job after the failed one saw topic %q, bob %q", cTopic, cBob)
		}
		check("A", MembershipJoin)

		// A batch that fails as a whole: B breaks the transaction (its savepoint is gone, so the
		// rollback to it fails). Nothing of A or B stays, in the database or the cache.
		jobs = []*job{
			{ctx: ctx, fn: func(tx *txn) error { return appendAll(tx, topic("lost A")) }},
			{ctx: ctx, fn: func(tx *txn) error {
				if err := appendAll(tx, topic("lost B"), ban); err != nil {
					return err
				}
				if err := tx.c.ReleaseSavepoint(ctx); err != nil {
					return err
				}
				return errBoom
			}},
		}
		runJobs(s, jobs)
		if got := jobErrs(jobs); got[0] == nil || got[1] == nil {
			t.Fatalf("failed batch results: %v", got)
		}
		check("A", MembershipJoin)
	})
}

// runJobs runs jobs as one batch of the writer. The writer goroutine is idle (every earlier
// write has returned), so the test goroutine may act as the writer.
func runJobs(s *Service, jobs []*job) {
	for _, j := range jobs {
		j.done = make(chan error, 1)
	}
	s.runSerial(jobs)
}

func jobErrs(jobs []*job) []error {
	out := make([]error, len(jobs))
	for i, j := range jobs {
		out[i] = <-j.done
	}
	return out
}

// newTestService is a room service of test.local on st, closed at the end of the test.
func newTestService(t *testing.T, st *storage.Store) *Service {
	_, priv, _ := ed25519.GenerateKey(nil)
	s := New(st, nil, Options{ServerName: "test.local", Key: signing.Key{ID: "ed25519:t", Private: priv}, DefaultVersion: event.V11},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(s.Close)
	return s
}
