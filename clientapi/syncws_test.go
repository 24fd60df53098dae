package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hearthmx/homeserver/clientapi"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// wsMsg is a message of the sync WebSocket.
type wsMsg struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	NextBatch string          `json:"next_batch"`
	Body      json.RawMessage `json:"body"`
	Errcode   string          `json:"errcode"`
	Error     string          `json:"error"`
}

// wsClient is a test client of the sync WebSocket; a goroutine reads once start is called.
type wsClient struct {
	c    *websocket.Conn
	msgs chan wsMsg
	err  error // the read error, set before msgs is closed
}

// dialWS connects to the sync WebSocket with an optional Authorization token and query.
func dialWS(t *testing.T, s *servertest.Server, token, query string) (*wsClient, *http.Response, error) {
	t.Helper()
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
	if token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(s.URL, "http") + streamAPI + "/sync/ws"
	if query != "" {
		u += "?" + query
	}
	c, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { _ = c.CloseNow() })
	return &wsClient{c: c, msgs: make(chan wsMsg, 4096)}, resp, nil
}

func mustDialWS(t *testing.T, s *servertest.Server, token, query string) *wsClient {
	t.Helper()
	w, _, err := dialWS(t, s, token, query)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	w.start(t)
	return w
}

func (w *wsClient) start(t *testing.T) {
	go func() {
		defer close(w.msgs)
		for {
			_, data, err := w.c.Read(context.Background())
			if err != nil {
				w.err = err
				return
			}
			var m wsMsg
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("ws: not JSON: %s", data)
			}
			w.msgs <- m
		}
	}()
}

func (w *wsClient) send(t *testing.T, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if err := w.c.Write(context.Background(), websocket.MessageText, data); err != nil {
		t.Fatalf("ws write: %v", err)
	}
}

// until returns the first message that satisfies pred, failing after 10 s or at the end.
func (w *wsClient) until(t *testing.T, what string, pred func(wsMsg) bool) wsMsg {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-w.msgs:
			if !ok {
				t.Fatalf("ws: closed while waiting for %s: %v", what, w.err)
			}
			if pred(m) {
				return m
			}
		case <-timeout:
			t.Fatalf("ws: no %s within 10s", what)
		}
	}
}

// reply waits for the ack or error of request id.
func (w *wsClient) reply(t *testing.T, id string) wsMsg {
	t.Helper()
	return w.until(t, "reply to "+id, func(m wsMsg) bool { return (m.Type == "ack" || m.Type == "error") && m.ID == id })
}

// closed drains the connection and returns its close code (-1 for none).
func (w *wsClient) closed(t *testing.T) (websocket.StatusCode, []wsMsg) {
	t.Helper()
	var got []wsMsg
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-w.msgs:
			if !ok {
				return websocket.CloseStatus(w.err), got
			}
			got = append(got, m)
		case <-timeout:
			t.Fatalf("ws: not closed within 20s (%d messages)", len(got))
		}
	}
}

func isSync(m wsMsg) bool { return m.Type == "sync" }

// TestSyncWS: sync pushes (next_batch as in the body), sends idempotent by txn_id like PUT /send,
// unknown and not yet available operations, and restarting the stream with sync_params.
func TestSyncWS(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := sharedRoom(t, s)
		w := mustDialWS(t, s, bob.AccessToken, "")
		first := w.until(t, "initial sync", isSync)
		if first.NextBatch == "" || parseSync(t, first.Body).NextBatch != first.NextBatch {
			t.Fatalf("initial sync: next_batch %q, body %.200s", first.NextBatch, first.Body)
		}

		sendText(t, s, alice, roomID, "hello")
		m := w.until(t, "hello", isSync)
		if fmt.Sprint(parseSync(t, m.Body).texts(roomID)) != "[hello]" || parseSync(t, m.Body).NextBatch != m.NextBatch {
			t.Fatalf("after hello: %s", m.Body)
		}

		send := map[string]any{"type": "send", "room_id": roomID, "event_type": "m.room.message", "txn_id": "ws-txn-1",
			"content": map[string]any{"msgtype": "m.text", "body": "from ws"}}
		var ids []string
		for _, id := range []string{"s1", "s2"} {
			send["id"] = id
			w.send(t, send)
			r := w.reply(t, id)
			var body struct {
				EventID string `json:"event_id"`
			}
			_ = json.Unmarshal(r.Body, &body)
			if r.Type != "ack" || !strings.HasPrefix(body.EventID, "$") {
				t.Fatalf("send %s: %+v", id, r)
			}
			ids = append(ids, body.EventID)
		}
		res := s.Do(t, "PUT", roomPath(roomID, "/send/m.room.message/ws-txn-1"), bob.AccessToken,
			map[string]any{"msgtype": "m.text", "body": "from ws"})
		want(t, "PUT with the same txn", res, http.StatusOK, "")
		if ids[0] != ids[1] || res.Str("event_id") != ids[0] {
			t.Fatalf("txn not idempotent: %v and %s", ids, res.Str("event_id"))
		}
		res = s.Do(t, "GET", roomPath(roomID, "/messages?dir=b&limit=50"), bob.AccessToken, nil)
		if n := strings.Count(string(res.Raw), `"from ws"`); n != 1 {
			t.Fatalf("%d copies of the sent event: %s", n, res.Raw)
		}

		for _, c := range []struct{ typ, errcode string }{
			{"nonsense", "M_UNRECOGNIZED"}, {"typing", "M_INVALID_PARAM"}, {"receipt", "M_INVALID_PARAM"},
			{"presence", "M_MISSING_PARAM"}, {"to_device", "M_MISSING_PARAM"}, {"auth", "M_BAD_STATE"},
		} {
			w.send(t, map[string]any{"type": c.typ, "id": "op-" + c.typ})
			if r := w.reply(t, "op-"+c.typ); r.Type != "error" || r.Errcode != c.errcode || r.Error == "" {
				t.Fatalf("%s: %+v", c.typ, r)
			}
		}
		// Typing, receipts and presence over the socket do what their HTTP endpoints do.
		for _, op := range []map[string]any{
			{"type": "typing", "id": "t1", "room_id": roomID, "typing": true, "timeout": 30000},
			{"type": "receipt", "id": "r1", "room_id": roomID, "receipt_type": "m.read", "event_id": ids[0]},
			{"type": "presence", "id": "p1", "presence": "unavailable", "status_msg": "in a meeting"},
		} {
			w.send(t, op)
			if r := w.reply(t, op["id"].(string)); r.Type != "ack" {
				t.Fatalf("%s over the socket: %+v", op["type"], r)
			}
		}
		res = s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil)
		if !strings.Contains(string(res.Raw), `"m.typing"`) || !strings.Contains(string(res.Raw), `"user_ids":["`+bob.UserID+`"]`) ||
			!strings.Contains(string(res.Raw), `"m.read":{"`+bob.UserID+`"`) {
			t.Fatalf("alice does not see bob's typing and receipt: %s", res.Raw)
		}
		res = s.Do(t, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(bob.UserID)+"/status", alice.AccessToken, nil)
		// (bob's own sync stream keeps him online, so only the status message is certain.)
		if res.Str("status_msg") != "in a meeting" {
			t.Fatalf("bob's presence set over the socket: %s", res.Raw)
		}
		w.send(t, map[string]any{"type": "send", "id": "bad", "room_id": "nope", "event_type": "m.room.message", "txn_id": "x",
			"content": map[string]any{}})
		if r := w.reply(t, "bad"); r.Errcode != "M_INVALID_PARAM" {
			t.Fatalf("bad room ID: %+v", r)
		}
		w.send(t, map[string]any{"type": "sync_params", "id": "p0", "filter": "999"})
		if r := w.reply(t, "p0"); r.Errcode != "M_INVALID_PARAM" {
			t.Fatalf("unknown filter: %+v", r)
		}

		// Restart from before hello, with a filter: hello and "from ws" again, in order.
		w.send(t, map[string]any{"type": "sync_params", "id": "p1", "since": first.NextBatch,
			"filter": map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 50}}}})
		if r := w.reply(t, "p1"); r.Type != "ack" {
			t.Fatalf("sync_params: %+v", r)
		}
		m = w.until(t, "restarted sync", isSync)
		if got := fmt.Sprint(parseSync(t, m.Body).texts(roomID)); got != "[hello from ws]" {
			t.Fatalf("after sync_params: %s", got)
		}
	})
}

// TestSyncWSAuth: the Authorization header, or the first message; nothing else (not the query
// string) and nothing in time close the socket with 4001.
func TestSyncWSAuth(t *testing.T) {
	clientapi.SetWSAuthTimeout(t, 300*time.Millisecond)
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		bob := s.Register(t, "bob", "password-bob")

		if _, resp, err := dialWS(t, s, "not-a-token", ""); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad header token: %v", err)
		}

		w := mustDialWS(t, s, "", "")
		w.send(t, map[string]any{"type": "auth", "id": "a", "access_token": bob.AccessToken})
		r := w.reply(t, "a")
		if r.Type != "ack" || !strings.Contains(string(r.Body), bob.UserID) {
			t.Fatalf("auth: %+v %s", r, r.Body)
		}
		w.until(t, "initial sync", isSync)

		for _, c := range []struct {
			name, query string
			first       any
			errcode     string
		}{
			{"wrong token", "", map[string]any{"type": "auth", "id": "a", "access_token": "nope"}, "M_UNKNOWN_TOKEN"},
			{"not auth first", "", map[string]any{"type": "send", "id": "a"}, "M_MISSING_TOKEN"},
			{"nothing in time, token in the query", "access_token=" + url.QueryEscape(bob.AccessToken), nil, "M_MISSING_TOKEN"},
		} {
			w := mustDialWS(t, s, "", c.query)
			if c.first != nil {
				w.send(t, c.first)
			}
			code, msgs := w.closed(t)
			if int(code) != clientapi.WSCloseUnauthorized || len(msgs) != 1 || msgs[0].Type != "error" || msgs[0].Errcode != c.errcode {
				t.Fatalf("%s: close %d, messages %+v", c.name, code, msgs)
			}
		}
	})
}

// TestSyncWSBackPressure: a client that stops reading is not buffered for without bound: the
// server sends what is queued, closes with 4002, and the client resumes from the last next_batch
// it received, missing nothing and getting nothing twice.
func TestSyncWSBackPressure(t *testing.T) {
	slow := make(chan struct{}, 1)
	clientapi.SetWSQueueSize(t, 2)
	clientapi.SetWSWriteTimeout(t, 200*time.Millisecond)
	clientapi.SetWSTooSlowHook(t, func() {
		select {
		case slow <- struct{}{}:
		default:
		}
	})
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := sharedRoom(t, s)
		filter := "filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":1000}}}`)
		w, _, err := dialWS(t, s, bob.AccessToken, filter)
		if err != nil {
			t.Fatal(err)
		}
		// Bob does not read; alice sends until the server gives up on him (once the socket buffers,
		// a few MB on loopback, are full).
		pad := strings.Repeat("x", 32<<10)
		var sent []string
		for gaveUp := false; !gaveUp; {
			if len(sent) == 2000 {
				t.Fatal("the server never found the client too slow")
			}
			body := fmt.Sprintf("m%03d %s", len(sent), pad)
			sendText(t, s, alice, roomID, body)
			sent = append(sent, body[:4])
			select {
			case <-slow:
				gaveUp = true
			default:
			}
		}
		w.start(t)
		code, msgs := w.closed(t)
		if int(code) != clientapi.WSCloseTooSlow {
			t.Fatalf("close code %d (%v) after %d messages", code, w.err, len(msgs))
		}
		var got []string
		last := ""
		for _, m := range msgs {
			if m.Type != "sync" {
				t.Fatalf("unexpected %+v", m)
			}
			for _, b := range parseSync(t, m.Body).texts(roomID) {
				got = append(got, b[:4])
			}
			last = m.NextBatch
		}
		if len(got) >= len(sent) {
			t.Fatalf("everything arrived (%d of %d): nothing was held back", len(got), len(sent))
		}
		if last == "" {
			t.Fatal("no sync message before the close")
		}
		// Resume from the last next_batch received.
		w2 := mustDialWS(t, s, bob.AccessToken, filter+"&since="+url.QueryEscape(last))
		for len(got) < len(sent) {
			m := w2.until(t, "the rest", isSync)
			for _, b := range parseSync(t, m.Body).texts(roomID) {
				got = append(got, b[:4])
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(sent) {
			t.Fatalf("received %v, sent %v", got, sent)
		}
	})
}

// TestSyncWSRepliesAndSyncsInterleaved: answers to requests and sync messages share the socket
// (whichever goroutine finds it idle writes, the other queues behind it): both arrive complete and
// each in its own order, also when the client sends a burst of requests that overflows the queue,
// and the normal close after the client's close is clean.
func TestSyncWSRepliesAndSyncsInterleaved(t *testing.T) {
	clientapi.SetWSQueueSize(t, 2)
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := sharedRoom(t, s)
		// (a timeline limit above n: a response that falls behind must not be limited)
		w := mustDialWS(t, s, bob.AccessToken, "filter="+url.QueryEscape(`{"room":{"timeline":{"limit":100}}}`))
		w.until(t, "initial sync", isSync)
		const n = 40
		done := make(chan struct{})
		go func() { // alice sends while bob's requests are answered
			defer close(done)
			for i := range n {
				sendText(t, s, alice, roomID, fmt.Sprintf("m%02d", i))
			}
		}()
		var acks, texts []string
		read := func(until func() bool) {
			timeout := time.After(20 * time.Second)
			for !until() {
				select {
				case m, ok := <-w.msgs:
					if !ok {
						t.Fatalf("closed after %d acks and %d messages: %v", len(acks), len(texts), w.err)
					}
					switch m.Type {
					case "ack":
						acks = append(acks, m.ID)
					case "sync":
						texts = append(texts, parseSync(t, m.Body).texts(roomID)...)
					default:
						t.Fatalf("unexpected %+v", m)
					}
				case <-timeout:
					t.Fatalf("%d acks and %d messages within 20s", len(acks), len(texts))
				}
			}
		}
		// All the requests at once, many more than the queue holds (2 here): the answers wait for
		// room, the client is slowed down, not cut off as too slow.
		for i := range n {
			w.send(t, map[string]any{"type": "typing", "id": fmt.Sprintf("t%02d", i), "room_id": roomID, "typing": i%2 == 0, "timeout": 30000})
		}
		read(func() bool { return len(acks) >= n })
		<-done
		read(func() bool { return len(texts) >= n })
		for i := range n {
			if acks[i] != fmt.Sprintf("t%02d", i) || texts[i] != fmt.Sprintf("m%02d", i) {
				t.Fatalf("out of order: acks %v, texts %v", acks, texts)
			}
		}
		if err := w.c.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Fatalf("close: %v", err)
		}
	})
}

// TestVersionsAdvertiseSyncStreams: /versions lists both transports.
func TestVersionsAdvertiseSyncStreams(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	res := s.Do(t, "GET", "/_matrix/client/versions", "", nil)
	f, _ := res.JSON["unstable_features"].(map[string]any)
	if f["dev.hearth.sync_sse"] != true || f["dev.hearth.sync_ws"] != true {
		t.Fatalf("unstable_features: %s", res.Raw)
	}
}
