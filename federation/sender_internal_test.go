package federation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func TestRefused(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{errors.New("connection refused"), false},
		{&fedclient.Error{Status: 500}, false},
		{&fedclient.Error{Status: 502}, false},
		{&fedclient.Error{Status: 401, Code: "M_UNAUTHORIZED"}, false},
		{&fedclient.Error{Status: 408}, false},
		{&fedclient.Error{Status: 429, Code: "M_LIMIT_EXCEEDED"}, false},
		{&fedclient.Error{Status: 400, Code: "M_BAD_JSON"}, true},
		{fmt.Errorf("send: %w", &fedclient.Error{Status: 403, Code: "M_FORBIDDEN"}), true},
		{&fedclient.Error{Status: 404, Code: "M_UNRECOGNIZED"}, true},
	} {
		if got := refused(c.err); got != c.want {
			t.Errorf("refused(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// Ephemeral EDUs older than ephemeralTTL are dropped instead of sent; the rest keep their order.
func TestTakeEphemeralDropsExpired(t *testing.T) {
	s := &Sender{dests: map[string]*destQueue{}}
	now := time.Now()
	q := &destQueue{eph: []pendingEDU{
		{typ: "m.typing", key: "a", queued: now.Add(-2 * ephemeralTTL)},
		{typ: "m.typing", key: "b", queued: now.Add(-time.Second)},
		{typ: "m.presence", key: "c", queued: now},
	}}
	got := s.takeEphemeral(q, 1)
	if len(got) != 1 || got[0].key != "b" {
		t.Fatalf("took %+v, want only b", got)
	}
	if len(q.eph) != 1 || q.eph[0].key != "c" {
		t.Fatalf("left %+v, want c", q.eph)
	}
	// A failed transaction's EDUs go back in front, unless a newer one with the same key replaced it.
	s.putBackEphemeral(q, []pendingEDU{got[0], {typ: "m.presence", key: "c", queued: now.Add(-time.Second)}})
	if len(q.eph) != 2 || q.eph[0].key != "b" || q.eph[1].key != "c" || !q.eph[1].queued.Equal(now) {
		t.Fatalf("after put back: %+v", q.eph)
	}
}

// A lease the database could not answer for is reported as an error (the queue tries again within
// leaseRetry) and does not count as a refusal, which would make it wait for another node.
func TestHoldLeaseDatabaseError(t *testing.T) {
	store := storagetest.Open(t, "sqlite")
	s := &Sender{o: SenderOptions{Store: store, Log: slog.New(slog.DiscardHandler)}, ctx: context.Background(), node: "n1"}
	q := &destQueue{name: "b.org"}
	if held, err := s.holdLease(q); !held || err != nil {
		t.Fatalf("a free lease: %v, %v", held, err)
	}
	q.leaseUntil = time.Time{} // as if half of it had passed
	store.Close()
	held, err := s.holdLease(q)
	if held || err == nil {
		t.Fatalf("with the database closed: held %v, err %v", held, err)
	}
	if !q.tried.IsZero() {
		t.Error("a database error counted as another node holding the lease")
	}
}
