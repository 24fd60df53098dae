package federation_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// fakeDestination is a federation server that records the transactions it is sent and fails them
// while down is set. It does not check signatures: it tests what the sender sends.
type fakeDestination struct {
	name string
	srv  *http.Server

	mu   sync.Mutex
	down bool
	// attempts are the transactions received, accepted or not, in order.
	attempts []receivedTxn
}

type receivedTxn struct {
	ID       string
	Accepted bool
	EDUs     []struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	} `json:"edus"`
	PDUs []json.RawMessage `json:"pdus"`
}

func newFakeDestination(t *testing.T, ca *servertest.CA, ip string) *fakeDestination {
	t.Helper()
	crt, err := cert.Issue(ca.CertPEM, ca.KeyPEM, []string{ip})
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", net.JoinHostPort(ip, "0"), &tls.Config{Certificates: []tls.Certificate{crt}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDestination{name: net.JoinHostPort(ip, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve)}
	go func() { _ = f.srv.Serve(l) }()
	t.Cleanup(func() { _ = f.srv.Close() })
	return f
}

func (f *fakeDestination) serve(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/send/")
	if !ok || r.Method != http.MethodPut {
		http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
		return
	}
	var txn receivedTxn
	if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
		http.Error(w, `{"errcode":"M_BAD_JSON"}`, http.StatusBadRequest)
		return
	}
	txn.ID = id
	f.mu.Lock()
	txn.Accepted = !f.down
	f.attempts = append(f.attempts, txn)
	f.mu.Unlock()
	if !txn.Accepted {
		http.Error(w, `{"errcode":"M_UNKNOWN"}`, http.StatusInternalServerError)
		return
	}
	_, _ = w.Write([]byte(`{"pdus":{}}`))
}

func (f *fakeDestination) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeDestination) txns() []receivedTxn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]receivedTxn(nil), f.attempts...)
}

// accepted lists the contents of the EDUs of eduType in accepted transactions, in order.
func (f *fakeDestination) accepted(eduType string) []string {
	var out []string
	for _, txn := range f.txns() {
		if !txn.Accepted {
			continue
		}
		for _, e := range txn.EDUs {
			if e.Type == eduType {
				out = append(out, string(e.Content))
			}
		}
	}
	return out
}

// Durable EDUs reach the destination in order, wait out its downtime, are retried under the same
// transaction ID and leave the queue once accepted.
func TestDurableEDUs(t *testing.T) {
	ca := servertest.NewCA(t)
	servertest.ForEachBackend(t, func(t *testing.T, hs *servertest.Server) {
		ctx := context.Background()
		dest := newFakeDestination(t, ca, "127.0.0.9")
		dest.setDown(true)
		s := hs.Federation.Sender()
		for i := range 3 {
			if err := s.QueueEDU(ctx, []string{dest.name, hs.Config.ServerName}, "org.example.test", map[string]int{"n": i}); err != nil {
				t.Fatal(err)
			}
		}
		servertest.Eventually(t, 10*time.Second, func() error {
			if n := len(dest.txns()); n < 2 {
				return fmt.Errorf("%d attempts while down", n)
			}
			return nil
		})
		dest.setDown(false)
		servertest.Eventually(t, 10*time.Second, func() error {
			if got := dest.accepted("org.example.test"); strings.Join(got, ",") != `{"n":0},{"n":1},{"n":2}` {
				return fmt.Errorf("accepted %v", got)
			}
			return nil
		})
		// A retry of the same EDUs reuses the transaction ID; other contents get other IDs.
		idOf, contentOf := map[string]string{}, map[string]string{}
		for _, txn := range dest.txns() {
			b, _ := json.Marshal(txn.EDUs)
			content := string(b)
			if id, ok := idOf[content]; ok && id != txn.ID {
				t.Errorf("retries of the same EDUs used transaction IDs %q and %q", id, txn.ID)
			}
			if c, ok := contentOf[txn.ID]; ok && c != content {
				t.Errorf("transaction ID %q used for %s and %s", txn.ID, c, content)
			}
			idOf[content], contentOf[txn.ID] = txn.ID, content
		}
		servertest.Eventually(t, 5*time.Second, func() error {
			n, err := hs.Store.Read().OutboxEDULen(ctx, dest.name)
			if err != nil || n != 0 {
				return fmt.Errorf("%d EDUs still queued (%v)", n, err)
			}
			return nil
		})
		// This server never queues for itself.
		if n, _ := hs.Store.Read().OutboxEDULen(ctx, hs.Config.ServerName); n != 0 {
			t.Errorf("%d EDUs queued for this server itself", n)
		}
	}, servertest.Federated(t, ca, "127.0.0.1"), fastRetry)
}

// Ephemeral EDUs with the same key coalesce while the destination is down: only the latest is sent.
func TestEphemeralEDUsCoalesce(t *testing.T) {
	ca := servertest.NewCA(t)
	hs := servertest.Start(t, "sqlite", servertest.Federated(t, ca, "127.0.0.1"), fastRetry)
	dest := newFakeDestination(t, ca, "127.0.0.9")
	dest.setDown(true)
	s := hs.Federation.Sender()
	s.QueueEphemeralEDU([]string{dest.name}, "m.typing", "!r @u", map[string]bool{"typing": true})
	servertest.Eventually(t, 10*time.Second, func() error {
		if len(dest.txns()) == 0 {
			return fmt.Errorf("no attempt yet")
		}
		return nil
	})
	s.QueueEphemeralEDU([]string{dest.name}, "m.typing", "!r @u", map[string]bool{"typing": false})
	s.QueueEphemeralEDU([]string{dest.name}, "m.typing", "!r @v", map[string]bool{"typing": true})
	dest.setDown(false)
	servertest.Eventually(t, 10*time.Second, func() error {
		if got := dest.accepted("m.typing"); len(got) < 2 {
			return fmt.Errorf("accepted %v", got)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // anything more would have been sent by now
	got := dest.accepted("m.typing")
	if strings.Join(got, ",") != `{"typing":false},{"typing":true}` {
		t.Errorf("accepted typing EDUs %v, want the latest of @u then @v", got)
	}
	ids := map[string]bool{}
	for _, txn := range dest.txns() {
		if txn.Accepted && ids[txn.ID] {
			t.Errorf("transaction ID %q used for two accepted transactions", txn.ID)
		}
		ids[txn.ID] = true
	}
}

// Incoming EDUs go to the handler of their type with the authenticated origin; malformed and
// unknown ones are skipped without failing the transaction.
func TestIncomingEDUsDispatched(t *testing.T) {
	ca := servertest.NewCA(t)
	hs1 := servertest.Start(t, "sqlite", servertest.Federated(t, ca, "127.0.0.1"), fastRetry)
	hs2 := servertest.Start(t, "sqlite", servertest.Federated(t, ca, "127.0.0.2"), fastRetry)
	type got struct{ origin, content string }
	ch := make(chan got, 10)
	hs2.Federation.SetEDUHandler("org.example.test", func(_ context.Context, origin string, content json.RawMessage) error {
		ch <- got{origin, string(content)}
		return nil
	})
	body := map[string]any{"origin": hs1.Config.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{},
		"edus": []any{"not an object", map[string]any{"edu_type": "org.example.unknown", "content": map[string]int{}},
			map[string]any{"edu_type": "org.example.test", "content": map[string]int{"n": 7}}}}
	var resp map[string]any
	if err := hs1.Federation.Client().DoJSON(context.Background(), hs2.Config.ServerName, "PUT",
		"/_matrix/federation/v1/send/edu-test-1", body, &resp); err != nil {
		t.Fatalf("PUT /send: %v", err)
	}
	select {
	case g := <-ch:
		if g.origin != hs1.Config.ServerName || g.content != `{"n":7}` {
			t.Errorf("handler got %+v", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the EDU handler was not called")
	}
	// Through the queue, too.
	if err := hs1.Federation.Sender().QueueEDU(context.Background(), []string{hs2.Config.ServerName}, "org.example.test", map[string]int{"n": 8}); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-ch:
		if g.content != `{"n":8}` {
			t.Errorf("handler got %+v", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued EDU did not arrive")
	}
}

// With several nodes on one database, the node holding a destination's lease sends its queued rows;
// the others send only the ephemeral EDUs they hold, and take over once the lease is free.
func TestDestinationLease(t *testing.T) {
	ca := servertest.NewCA(t)
	servertest.ForEachBackend(t, func(t *testing.T, hs *servertest.Server) {
		ctx := context.Background()
		dest := newFakeDestination(t, ca, "127.0.0.9")
		lease := func(fn func(c storage.Conn) error) {
			if err := hs.Store.Write(ctx, fn); err != nil {
				t.Fatal(err)
			}
		}
		far := time.Now().Add(time.Hour).UnixMilli()
		lease(func(c storage.Conn) error {
			_, err := c.AcquireLease(ctx, dest.name, "other-node", time.Now().UnixMilli(), far)
			return err
		})
		s := hs.Federation.Sender()
		if err := s.QueueEDU(ctx, []string{dest.name}, "org.example.durable", map[string]int{"n": 1}); err != nil {
			t.Fatal(err)
		}
		s.QueueEphemeralEDU([]string{dest.name}, "org.example.ephemeral", "", map[string]int{"n": 2})
		servertest.Eventually(t, 10*time.Second, func() error {
			if got := dest.accepted("org.example.ephemeral"); len(got) != 1 {
				return fmt.Errorf("ephemeral EDUs accepted: %v", got)
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond)
		if got := dest.accepted("org.example.durable"); len(got) != 0 {
			t.Fatalf("a node without the lease sent the queued EDUs: %v", got)
		}
		lease(func(c storage.Conn) error { return c.ReleaseLease(ctx, dest.name, "other-node") })
		servertest.Eventually(t, 15*time.Second, func() error {
			s.Kick(dest.name)
			if got := dest.accepted("org.example.durable"); len(got) != 1 {
				return fmt.Errorf("durable EDUs accepted: %v", got)
			}
			return nil
		})
	}, servertest.Federated(t, ca, "127.0.0.1"), fastRetry)
}

// A transaction's to-device EDUs are handled before its PDUs (a room key before the message
// encrypted with it), typing and the like after them.
func TestKeyEDUsBeforePDUs(t *testing.T) {
	sr := newSharedRoom(t, "sqlite", "")
	ctx := context.Background()
	p := sr.forge(t, sr.bob.UserID, "m.room.message", nil, msg("encrypted, say"), nil, nil)
	stored := func() bool {
		_, err := sr.hs1.Store.Read().Event(ctx, p.EventID)
		return err == nil
	}
	seen := map[string]bool{}
	for _, typ := range []string{"m.direct_to_device", "m.typing"} {
		sr.hs1.Federation.SetEDUHandler(typ, func(context.Context, string, json.RawMessage) error {
			seen[typ] = stored()
			return nil
		})
	}
	body := map[string]any{"origin": sr.name2, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{p.Raw},
		"edus": []any{map[string]any{"edu_type": "m.typing", "content": map[string]any{}},
			map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{}}}}
	var resp map[string]any
	if err := sr.hs2.Federation.Client().DoJSON(ctx, sr.name1, "PUT", "/_matrix/federation/v1/send/order-1", body, &resp); err != nil {
		t.Fatalf("PUT /send: %v", err)
	}
	if !stored() {
		t.Fatalf("the PDU was not stored: %v", resp)
	}
	if len(seen) != 2 || seen["m.direct_to_device"] || !seen["m.typing"] {
		t.Errorf("the PDU was stored when the handlers ran: %v; want before m.direct_to_device, after m.typing", seen)
	}
}
