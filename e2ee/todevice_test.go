package e2ee_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

const tdServer = "example.org"

func tdLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func tdUser(localpart string) string { return spec.NewUserID(localpart, tdServer).String() }

// tdWaker records the users it was asked to wake.
type tdWaker struct {
	mu    sync.Mutex
	woken []string
}

func (w *tdWaker) Wake(users ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.woken = append(w.woken, users...)
}

func (w *tdWaker) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.woken
	w.woken = nil
	slices.Sort(out)
	return out
}

// tdRemote records what would go to federation.
type tdRemote struct {
	mu    sync.Mutex
	calls []map[string]map[string]json.RawMessage
}

func (r *tdRemote) SendToDevice(_ context.Context, _, _, _ string, messages map[string]map[string]json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, messages)
	return nil
}

// tdDevices creates devices (localpart → device IDs).
func tdDevices(t testing.TB, s *storage.Store, devices map[string][]string) {
	t.Helper()
	err := s.Write(context.Background(), func(c storage.Conn) error {
		for lp, ids := range devices {
			for _, id := range ids {
				if err := c.UpsertDevice(context.Background(), storage.Device{Localpart: lp, DeviceID: id, CreatedTS: 1}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tdMsgs builds a request body: user → device → content.
func tdMsgs(pairs ...string) map[string]map[string]json.RawMessage {
	out := map[string]map[string]json.RawMessage{}
	for i := 0; i+2 < len(pairs); i += 3 {
		u := tdUser(pairs[i])
		if out[u] == nil {
			out[u] = map[string]json.RawMessage{}
		}
		out[u][pairs[i+1]] = json.RawMessage(pairs[i+2])
	}
	return out
}

type tdEvent struct {
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// tdPending reads everything waiting for a device (without acknowledging it).
func tdPending(t testing.TB, td *e2ee.ToDevice, localpart, device string) []tdEvent {
	t.Helper()
	ctx := context.Background()
	pos, err := td.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := td.Pending(ctx, tdUser(localpart), device, 0, pos, 100000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]tdEvent, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatalf("event %s: %v", r, err)
		}
	}
	return out
}

func tdContents(evs []tdEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Content)
	}
	return out
}

func TestToDeviceSendIsIdempotentPerTxnID(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1", "A2"}, "bob": {"B1"}})
		w := &tdWaker{}
		td := e2ee.NewToDevice(s, w, e2ee.ToDeviceOptions{ServerName: tdServer}, tdLog())

		msg := tdMsgs("bob", "B1", `{"n":1}`)
		for i := 0; i < 3; i++ { // the first request and two retries
			if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", "txn1", msg); err != nil {
				t.Fatal(err)
			}
		}
		if got := tdContents(tdPending(t, td, "bob", "B1")); !slices.Equal(got, []string{`{"n":1}`}) {
			t.Fatalf("after retries: %v, want one message", got)
		}
		if got := w.take(); !slices.Equal(got, []string{tdUser("bob")}) {
			t.Fatalf("woken %v, want bob once", got)
		}
		// The same txn ID from another device, or with another event type, is another request.
		if err := td.Send(ctx, tdUser("alice"), "A2", "m.test", "txn1", tdMsgs("bob", "B1", `{"n":2}`)); err != nil {
			t.Fatal(err)
		}
		if err := td.Send(ctx, tdUser("alice"), "A1", "m.other", "txn1", tdMsgs("bob", "B1", `{"n":3}`)); err != nil {
			t.Fatal(err)
		}
		evs := tdPending(t, td, "bob", "B1")
		if got := tdContents(evs); !slices.Equal(got, []string{`{"n":1}`, `{"n":2}`, `{"n":3}`}) {
			t.Fatalf("got %v", got)
		}
		if evs[0].Sender != tdUser("alice") || evs[0].Type != "m.test" || evs[2].Type != "m.other" {
			t.Fatalf("events %+v", evs)
		}
	})
}

func TestToDeviceStarReachesEveryDevice(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1"}, "bob": {"B1", "B2", "B3"}, "carol": {"C1"}})
		w := &tdWaker{}
		remote := &tdRemote{}
		td := e2ee.NewToDevice(s, w, e2ee.ToDeviceOptions{ServerName: tdServer, Remote: remote}, tdLog())

		msgs := tdMsgs("bob", "*", `{"all":true}`, "bob", "B2", `{"just":"B2"}`, "carol", "NOPE", `{}`, "nobody", "*", `{}`)
		msgs["@dave:elsewhere.example"] = map[string]json.RawMessage{"D1": json.RawMessage(`{"remote":1}`)}
		if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", "t1", msgs); err != nil {
			t.Fatal(err)
		}
		for dev, want := range map[string]string{"B1": `{"all":true}`, "B2": `{"just":"B2"}`, "B3": `{"all":true}`} {
			if got := tdContents(tdPending(t, td, "bob", dev)); !slices.Equal(got, []string{want}) {
				t.Errorf("%s got %v, want [%s]", dev, got, want)
			}
		}
		if got := tdPending(t, td, "carol", "C1"); len(got) != 0 {
			t.Errorf("carol's other device got %v", got)
		}
		if got := w.take(); !slices.Equal(got, []string{tdUser("bob")}) {
			t.Errorf("woken %v, want bob (carol got nothing)", got)
		}
		if len(remote.calls) != 1 || string(remote.calls[0]["@dave:elsewhere.example"]["D1"]) != `{"remote":1}` || len(remote.calls[0]) != 1 {
			t.Errorf("remote calls %v", remote.calls)
		}
		// A retry goes to federation no more than to local devices.
		if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", "t1", msgs); err != nil {
			t.Fatal(err)
		}
		if len(remote.calls) != 1 {
			t.Errorf("retry sent again to federation: %d calls", len(remote.calls))
		}
	})
}

func TestToDeviceSendRejectsBadInput(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1"}, "bob": {"B1"}})
		td := e2ee.NewToDevice(s, nil, e2ee.ToDeviceOptions{ServerName: tdServer}, tdLog())
		cases := []struct {
			name, typ, txn string
			msgs           map[string]map[string]json.RawMessage
			errcode        string
		}{
			{"bad user ID", "m.test", "t1", map[string]map[string]json.RawMessage{"bob": {"B1": json.RawMessage(`{}`)}}, "M_INVALID_PARAM"},
			{"content not an object", "m.test", "t2", tdMsgs("bob", "B1", `[1]`), "M_BAD_JSON"},
			{"content a string", "m.test", "t3", tdMsgs("bob", "B1", `"x"`), "M_BAD_JSON"},
			{"empty type", "", "t4", tdMsgs("bob", "B1", `{}`), "M_INVALID_PARAM"},
		}
		for _, c := range cases {
			err := td.Send(ctx, tdUser("alice"), "A1", c.typ, c.txn, c.msgs)
			var se *spec.Error
			if !errors.As(err, &se) || se.Code != c.errcode {
				t.Errorf("%s: got %v, want %s", c.name, err, c.errcode)
			}
		}
		if got := tdPending(t, td, "bob", "B1"); len(got) != 0 {
			t.Fatalf("refused requests stored %v", got)
		}
		// A remote user without a federation sender is skipped, not an error.
		msgs := map[string]map[string]json.RawMessage{"@x:elsewhere.example": {"X": json.RawMessage(`{}`)}}
		if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", "t5", msgs); err != nil {
			t.Fatal(err)
		}
	})
}

// Messages stay until the device acknowledges them by syncing with a later token, arrive in
// order, and come at most limit at a time.
func TestToDevicePendingAndAck(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1"}, "bob": {"B1", "B2"}})
		td := e2ee.NewToDevice(s, nil, e2ee.ToDeviceOptions{ServerName: tdServer}, tdLog())
		bob := tdUser("bob")
		for i := 1; i <= 5; i++ {
			if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", fmt.Sprint("t", i), tdMsgs("bob", "B1", fmt.Sprintf(`{"n":%d}`, i))); err != nil {
				t.Fatal(err)
			}
		}
		pos, err := td.Position(ctx)
		if err != nil || pos < 5 {
			t.Fatalf("position %d, %v", pos, err)
		}
		page := func(after int64, limit int) ([]string, int64) {
			t.Helper()
			raw, last, err := td.Pending(ctx, bob, "B1", after, pos, limit)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range raw {
				var e tdEvent
				_ = json.Unmarshal(r, &e)
				out = append(out, string(e.Content))
			}
			return out, last
		}
		first, last1 := page(0, 2)
		if !slices.Equal(first, []string{`{"n":1}`, `{"n":2}`}) || last1 >= pos {
			t.Fatalf("first page %v last %d (pos %d)", first, last1, pos)
		}
		// The response was lost: the client syncs again from the old token and gets the same.
		if again, last := page(0, 2); !slices.Equal(again, first) || last != last1 {
			t.Fatalf("repeat %v last %d", again, last)
		}
		// It syncs with the token of the first page: those are acknowledged and deleted.
		if err := td.Ack(ctx, bob, "B1", last1); err != nil {
			t.Fatal(err)
		}
		rest, last2 := page(last1, 10)
		if !slices.Equal(rest, []string{`{"n":3}`, `{"n":4}`, `{"n":5}`}) || last2 != pos {
			t.Fatalf("rest %v last %d", rest, last2)
		}
		if all, _ := page(0, 10); !slices.Equal(all, rest) {
			t.Fatalf("acknowledged messages still there: %v", all)
		}
		if err := td.Ack(ctx, bob, "B1", last2); err != nil {
			t.Fatal(err)
		}
		if all, last := page(0, 10); len(all) != 0 || last != pos {
			t.Fatalf("after the last ack: %v, last %d", all, last)
		}
		// Nothing pending: last is upto, or after if that is higher.
		if _, last, _ := td.Pending(ctx, bob, "B2", 0, pos, 0); last != pos {
			t.Fatalf("empty inbox: last %d, want %d", last, pos)
		}
		if _, last, _ := td.Pending(ctx, bob, "B2", pos+3, pos, 0); last != pos+3 {
			t.Fatalf("after > upto: last %d", last)
		}
		// A user of another server has no inbox.
		if evs, _, err := td.Pending(ctx, "@bob:elsewhere.example", "B1", 0, pos, 0); err != nil || len(evs) != 0 {
			t.Fatalf("remote user: %v %v", evs, err)
		}
	})
}

func TestToDeviceQueueLimit(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1"}, "bob": {"B1", "B2"}, "carol": {"C1"}})
		w := &tdWaker{}
		td := e2ee.NewToDevice(s, w, e2ee.ToDeviceOptions{ServerName: tdServer, MaxPending: 3}, tdLog())
		for i := 1; i <= 3; i++ {
			if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", fmt.Sprint("fill", i), tdMsgs("bob", "B1", `{}`)); err != nil {
				t.Fatal(err)
			}
		}
		w.take()
		before, _ := td.Position(ctx)
		// B1 is full: a request for it alone is refused, and stores nothing.
		err := td.Send(ctx, tdUser("alice"), "A1", "m.test", "only-b1", tdMsgs("bob", "B1", `{"x":0}`))
		var se *spec.Error
		if !errors.As(err, &se) || se.Code != "M_LIMIT_EXCEEDED" || se.Status != http.StatusTooManyRequests || se.Extra["retry_after_ms"] == nil {
			t.Fatalf("got %v, want M_LIMIT_EXCEEDED 429 with retry_after_ms", err)
		}
		if after, _ := td.Position(ctx); after != before {
			t.Fatalf("position moved from %d to %d", before, after)
		}
		if got := w.take(); len(got) != 0 {
			t.Fatalf("woken %v by a refused request", got)
		}
		// A request for several devices goes through without B1: a full device blocks no one else.
		req := tdMsgs("bob", "*", `{"x":1}`, "carol", "C1", `{"x":1}`)
		if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", "over", req); err != nil {
			t.Fatal(err)
		}
		if len(tdPending(t, td, "bob", "B1")) != 3 {
			t.Fatal("a message was queued for a full device")
		}
		for _, d := range [][2]string{{"bob", "B2"}, {"carol", "C1"}} {
			if got := tdContents(tdPending(t, td, d[0], d[1])); !slices.Equal(got, []string{`{"x":1}`}) {
				t.Fatalf("%v got %v", d, got)
			}
		}
		// Once bob's device synced, it receives again (the refused txn ID was not recorded).
		if err := td.Ack(ctx, tdUser("bob"), "B1", before); err != nil {
			t.Fatal(err)
		}
		if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", "only-b1", tdMsgs("bob", "B1", `{"x":0}`)); err != nil {
			t.Fatal(err)
		}
		if got := tdContents(tdPending(t, td, "bob", "B1")); !slices.Equal(got, []string{`{"x":0}`}) {
			t.Fatalf("B1 after its sync got %v", got)
		}
	})
}

// A dehydrated device does not sync: when its queue is full it misses messages instead of
// blocking everyone who sends to its user.
func TestToDeviceQueueLimitSparesDehydratedDevice(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1"}, "bob": {"B1"}})
		accounts := account.New(s, nil, account.Options{ServerName: tdServer}, tdLog())
		td := e2ee.NewToDevice(s, nil, e2ee.ToDeviceOptions{ServerName: tdServer, MaxPending: 2}, tdLog())
		dh := e2ee.NewDehydrated(s, accounts, td, nil, tdLog())
		if err := dh.Put(ctx, "bob", "DEHYDRATED", json.RawMessage(`{"algorithm":"x"}`), nil, e2ee.DehydratedKeys{}); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 4; i++ {
			if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", fmt.Sprint("t", i), tdMsgs("bob", "*", fmt.Sprintf(`{"n":%d}`, i))); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			if err := td.Ack(ctx, tdUser("bob"), "B1", 1<<40); err != nil { // B1 syncs all the time
				t.Fatal(err)
			}
		}
		if got := tdContents(tdPending(t, td, "bob", "DEHYDRATED")); !slices.Equal(got, []string{`{"n":1}`, `{"n":2}`}) {
			t.Fatalf("dehydrated device holds %v, want the first two", got)
		}
	})
}

func TestToDeviceInboxDeletedWithDevice(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1"}, "bob": {"B1", "B2"}})
		accounts := account.New(s, nil, account.Options{ServerName: tdServer}, tdLog())
		td := e2ee.NewToDevice(s, nil, e2ee.ToDeviceOptions{ServerName: tdServer}, tdLog())
		if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", "t1", tdMsgs("bob", "*", `{}`)); err != nil {
			t.Fatal(err)
		}
		if err := td.Send(ctx, tdUser("bob"), "B1", "m.test", "b1", tdMsgs("alice", "A1", `{"from":"B1"}`)); err != nil {
			t.Fatal(err)
		}
		if err := accounts.DeleteDevices(ctx, "bob", []string{"B1"}); err != nil {
			t.Fatal(err)
		}
		for dev, want := range map[string]int64{"B1": 0, "B2": 1} {
			if n, err := s.Read().CountToDevice(ctx, "bob", dev); err != nil || n != want {
				t.Fatalf("%s holds %d messages (%v), want %d", dev, n, err, want)
			}
		}
		// The device comes back with the same ID: an empty inbox, and its old transaction IDs are
		// forgotten (a new device, a new scope).
		tdDevices(t, s, map[string][]string{"bob": {"B1"}})
		if got := tdPending(t, td, "bob", "B1"); len(got) != 0 {
			t.Fatalf("new B1 got %v", got)
		}
		if err := td.Send(ctx, tdUser("bob"), "B1", "m.test", "b1", tdMsgs("alice", "A1", `{"from":"new B1"}`)); err != nil {
			t.Fatal(err)
		}
		if got := tdContents(tdPending(t, td, "alice", "A1")); !slices.Equal(got, []string{`{"from":"B1"}`, `{"from":"new B1"}`}) {
			t.Fatalf("alice got %v", got)
		}
		// Deactivation deletes every device, inboxes included.
		if err := s.Write(ctx, func(c storage.Conn) error {
			return c.CreateAccount(ctx, storage.Account{Localpart: "bob", CreatedTS: 1})
		}); err != nil {
			t.Fatal(err)
		}
		if err := accounts.Deactivate(ctx, "bob", false); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.Read().CountToDevice(ctx, "bob", "B2"); n != 0 {
			t.Fatalf("deactivated user's device holds %d messages", n)
		}
	})
}

// BenchmarkToDeviceFanOut sends one message to each of 1,000 devices (1,000 users, as a client
// shares a room key) per operation.
func BenchmarkToDeviceFanOut(b *testing.B) {
	for _, backend := range storagetest.Backends {
		b.Run(backend, func(b *testing.B) {
			s := storagetest.Open(b, backend)
			ctx := context.Background()
			users := map[string][]string{"alice": {"A1"}}
			msgs := map[string]map[string]json.RawMessage{}
			content := json.RawMessage(`{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{"k":{"type":0,"body":"` +
				`AwoguFQ2lGmV5T8Xq0b1Z+gIbQk2r8b5W2F5oW8s7y1Ch7Jv9ZS5ZGPvmoBNmGZgXoBeWm3gnUSBV2z4YpWmQk"}},"sender_key":"abc"}`)
			for i := range 1000 {
				lp := fmt.Sprintf("u%04d", i)
				users[lp] = []string{"D" + lp}
				msgs[tdUser(lp)] = map[string]json.RawMessage{"D" + lp: content}
			}
			tdDevices(b, s, users)
			td := e2ee.NewToDevice(s, nil, e2ee.ToDeviceOptions{ServerName: tdServer}, tdLog())
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := td.Send(ctx, tdUser("alice"), "A1", "m.room.encrypted", fmt.Sprint("txn", i), msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// Concurrent retries of one request deliver once; concurrent requests all deliver, in a stable
// order.
func TestToDeviceConcurrentSends(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1"}, "bob": {"B1"}})
		td := e2ee.NewToDevice(s, nil, e2ee.ToDeviceOptions{ServerName: tdServer}, tdLog())
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				txn := "same"
				if i%2 == 1 {
					txn = fmt.Sprint("own-", i)
				}
				errs <- td.Send(ctx, tdUser("alice"), "A1", "m.test", txn, tdMsgs("bob", "B1", fmt.Sprintf(`{"txn":%q}`, txn)))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got := tdContents(tdPending(t, td, "bob", "B1"))
		if len(got) != 9 || len(slices.Compact(slices.Sorted(slices.Values(got)))) != 9 {
			t.Fatalf("got %d messages %v, want 8 distinct plus one of the retried request", len(got), got)
		}
	})
}
