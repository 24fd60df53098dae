package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// BenchmarkSyncHandler is the server's part of one woken long poll without the network: the
// client listener's handler (every middleware, routing, authentication, the /sync handler and
// the response's encoding) answering GET /sync with a stored filter and a since token one message
// behind, in process. Between ops (timer stopped) a message is sent and another receiver reads
// it first, so each op is a woken long poll of a fan-out after the first receiver: the message
// from the shared room section, the unread counts from the cache. Allocations per op are those
// of such a response less net/http's own (background work of the send and of carol's sync that
// overlaps an op adds a few, so compare runs by their lowest figures). Its time is not a fan-out
// receiver's: nothing shares the per-op reads that 1,000 receivers of a message share (the
// stream positions, read again after every send); cmd/syncload measures that.
//
//	go test ./clientapi -run '^$' -bench 'SyncHandler' -benchmem
func BenchmarkSyncHandler(b *testing.B) {
	forBackends(b, func(b *testing.B, s *servertest.Server) {
		ctx := context.Background()
		alice := room.Sender{UserID: "@alice:localhost", Localpart: "alice", DeviceID: "ALICE"}
		roomID, err := s.Rooms.CreateRoom(ctx, room.CreateRequest{Creator: alice.UserID, Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		toks, err := s.Accounts.Register(ctx, account.RegisterParams{Localpart: "bob"})
		if err != nil {
			b.Fatal(err)
		}
		bob := room.Sender{UserID: string(toks.UserID), Localpart: "bob", DeviceID: toks.DeviceID}
		if _, err := s.Rooms.Join(ctx, roomID, bob, room.MemberProfile{}, ""); err != nil {
			b.Fatal(err)
		}
		f, err := s.Accounts.CreateFilter(ctx, "bob", []byte(`{"room":{"timeline":{"limit":50}}}`))
		if err != nil {
			b.Fatal(err)
		}
		// carol reads each range first, through the service, as the first receiver woken for a
		// message does: bob's read then takes the room section she built.
		ctoks, err := s.Accounts.Register(ctx, account.RegisterParams{Localpart: "carol"})
		if err != nil {
			b.Fatal(err)
		}
		carol := room.Sender{UserID: string(ctoks.UserID), Localpart: "carol", DeviceID: ctoks.DeviceID}
		if _, err := s.Rooms.Join(ctx, roomID, carol, room.MemberProfile{}, ""); err != nil {
			b.Fatal(err)
		}
		first, err := s.Sync.Sync(ctx, hsync.Request{UserID: bob.UserID, Localpart: "bob", DeviceID: bob.DeviceID})
		if err != nil {
			b.Fatal(err)
		}
		cf, err := filter.Parse([]byte(`{"room":{"timeline":{"limit":50}}}`))
		if err != nil {
			b.Fatal(err)
		}
		since := first.NextBatch
		h := s.Handler()
		w := &benchWriter{h: http.Header{}}
		msg := json.RawMessage(`{"msgtype":"m.text","body":"fan-out"}`)
		var served time.Duration // the handler's wall time alone (Start/StopTimer cost more)
		op := func() {
			b.StopTimer()
			if _, err := s.Rooms.Send(ctx, roomID, alice, "m.room.message", msg); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Sync.Sync(ctx, hsync.Request{UserID: carol.UserID, Localpart: "carol", DeviceID: carol.DeviceID,
				Since: since, Filter: cf}); err != nil {
				b.Fatal(err)
			}
			q := url.Values{"filter": {f}, "since": {since}, "timeout": {"30000"}}
			req, _ := http.NewRequest("GET", "/_matrix/client/v3/sync?"+q.Encode(), nil)
			req.RemoteAddr = "127.0.0.1:1234"
			req.Header.Set("Authorization", "Bearer "+toks.AccessToken)
			clear(w.h)
			w.status, w.body = 0, w.body[:0]
			b.StartTimer()
			start := time.Now()
			h.ServeHTTP(w, req)
			served += time.Since(start)
			b.StopTimer()
			if w.status != http.StatusOK || !bytes.Contains(w.body, []byte(`"fan-out"`)) {
				b.Fatalf("GET /sync: status %d: %s", w.status, w.body)
			}
			since = nextBatchOf(w.body)
			b.StartTimer()
		}
		op()
		b.ReportAllocs()
		served = 0
		b.ResetTimer()
		n := 0
		for b.Loop() {
			op()
			n++
		}
		b.ReportMetric(float64(served.Nanoseconds())/float64(n), "ns/serve")
	})
}

// benchWriter is a ResponseWriter that keeps nothing but the status and the body's length.
type benchWriter struct {
	h      http.Header
	status int
	body   []byte
}

func (w *benchWriter) Header() http.Header { return w.h }

func (w *benchWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body = append(w.body, p...)
	return len(p), nil
}
