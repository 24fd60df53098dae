package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/receipt"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// The sync WebSocket (docs/sync.md has the protocol). Per connection:
//
//	reader (the handler goroutine) ── requests, one at a time ──► ack / error ──┐ never waits for room
//	sync loop: /sync service from the last next_batch ──► {"type":"sync"} ──────┤ waits for room
//	                                                                             ▼ emit
//	        socket idle: the sender writes the message itself, then what was queued meanwhile
//	        socket busy: queued (at most wsQueueSize) for the goroutine writing, in order
//	closer: once shut down and the queue written, closes the connection
//	pinger: a ping every wsPingInterval; no pong within wsWriteTimeout closes the connection
//
// No goroutine is woken to write each message: the goroutine that made it writes it when the
// socket is idle, which is nearly always (handing every message to a writer goroutine cost about
// a tenth of the server's CPU in a fan-out). Nothing grows without bound when the client reads
// slowly: the sync loop writes its own messages, or waits for room in the queue (its updates pile
// up in the database, and the next sync response carries them all). A client that does not keep
// up (a reply finds the queue full, a write blocks for wsWriteTimeout, or no pong comes back in
// that time) is shut down: the server stops producing and reading requests, sends what is queued,
// then closes with wsCloseTooSlow, telling the client to reconnect from the last next_batch it
// received. Every close goes through the closer the same way, after what is queued; if it has not
// completed after wsCloseGrace, the TCP connection is dropped.

// Close codes of the sync WebSocket (4000-4999 are the application's). Reasons start with the
// Matrix errcode where there is one.
const (
	wsCloseUnauthorized websocket.StatusCode = 4001 // no valid access token (none in time, unknown, logged out)
	wsCloseTooSlow      websocket.StatusCode = 4002 // the client did not keep up: reconnect with since=<last next_batch>
	wsCloseBadParams    websocket.StatusCode = 4003 // the sync parameters of the upgrade URL were refused
)

// wsReadLimit caps one client message (a room event is at most 64 KiB anyway).
const wsReadLimit = 64 << 10

// Limits of the sync WebSocket; variables so tests can make them small.
var (
	wsQueueSize    = 16               // outbound messages waiting while another is written
	wsWriteTimeout = 10 * time.Second // one write, and the wait for a pong
	wsAuthTimeout  = 10 * time.Second // for the first message to authenticate
	wsPingInterval = 30 * time.Second
	wsCloseGrace   = 10 * time.Second // for the queue and the close handshake after a shutdown
	wsPollTimeout  = 30 * time.Second // of each internal /sync long poll

	testHookWSTooSlow func() // called when a connection is shut down as too slow
)

const wsReasonTooSlow = "too slow: reconnect with since=<the last next_batch you received>"

// wsMessage is a sync or ack message. Requests carry their fields beside type and id; errors are
// written by errorJSON.
type wsMessage struct {
	Type      string `json:"type"`
	ID        string `json:"id,omitempty"`
	NextBatch string `json:"next_batch,omitempty"` // sync
	Body      any    `json:"body,omitempty"`       // sync, ack
}

// wsMaxKeptBuffer bounds the message buffer the sync loop keeps between messages.
const wsMaxKeptBuffer = 64 << 10

// wsConn is one sync WebSocket.
type wsConn struct {
	a      *API
	c      *websocket.Conn
	log    *slog.Logger
	caller account.Caller
	token  string
	ctx    context.Context // the connection's work (sync loop, requests); ends at shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup // closer and pinger

	once    sync.Once
	closing chan struct{} // closed by shutdown: what is queued is sent, then the closer closes with:
	code    websocket.StatusCode
	reason  string
	grace   *time.Timer // drops the connection if closing takes longer than wsCloseGrace

	// The send side (emit, write). Lock order: outMu is never held while writing or calling
	// shutdown.
	outMu   sync.Mutex
	queue   [][]byte      // messages waiting while another is written; at most wsQueueSize
	writing bool          // a goroutine is writing; stays true once drained is closed
	broken  bool          // a write failed: the connection is gone
	room    chan struct{} // (capacity 1) the queue shrank: a sync loop waiting for room tries again
	drained chan struct{} // closed once shut down and the queue written (or the socket broke)
	stall   *time.Timer   // runs tooSlow when a write has been blocked for wsWriteTimeout

	// The running sync loop; only the reader goroutine starts and stops it.
	syncCancel context.CancelFunc
	syncDone   chan struct{}
}

// syncWS is GET /_matrix/client/unstable/dev.hearth/sync/ws: the sync stream and client requests
// over one WebSocket. The upgrade takes the /sync query parameters (since, filter, full_state,
// set_presence) and an Authorization header; without one, the first message must be
// {"type":"auth","access_token":...} within wsAuthTimeout. Tokens in the query string are refused
// like everywhere else.
func (a *API) syncWS(w http.ResponseWriter, r *http.Request) {
	var caller account.Caller
	token := accessToken(r)
	if token != "" {
		var err error
		if caller, err = a.accounts.Authenticate(r.Context(), token); err != nil {
			writeError(w, r, a.log, err) // refused before the upgrade: a plain 401
			return
		}
	}
	// Any origin may connect, as the client API allows any origin (CORS "*"): the socket is
	// authorised by an access token, never by cookies, so a foreign page gains nothing.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept answered the request
	}
	c.SetReadLimit(wsReadLimit)
	ctx, cancel := context.WithCancel(r.Context())
	wc := &wsConn{a: a, c: c, log: a.log, caller: caller, token: token, ctx: ctx, cancel: cancel,
		closing: make(chan struct{}), room: make(chan struct{}, 1), drained: make(chan struct{})}
	wc.stall = time.AfterFunc(time.Hour, wc.tooSlow)
	wc.stall.Stop() // armed by each write
	wc.wg.Add(2)
	go wc.closer()
	go wc.pinger()
	// Server shutdown closes the socket with "going away"; the client resumes from its token.
	defer context.AfterFunc(a.streams, func() { wc.shutdown(websocket.StatusGoingAway, "server shutting down") })()
	defer func() {
		wc.shutdown(websocket.StatusNormalClosure, "")
		wc.stopSync()
		wc.wg.Wait()
		wc.grace.Stop()
		wc.stall.Stop()
	}()

	if token == "" && !wc.authenticate() {
		return
	}
	q := r.URL.Query()
	if !wc.startSync(wc.a.newSyncStream(wc.caller, wc.token, q, q.Get("since"), q.Get("full_state"))) {
		return
	}
	for {
		// Not ctx: the library drops the connection when a read's context ends. Reading goes on
		// during a shutdown (pongs, the close handshake) but requests are then ignored.
		_, data, err := c.Read(context.Background())
		if err != nil {
			return
		}
		if wc.ctx.Err() == nil {
			wc.handle(data)
		}
	}
}

// authenticate waits for the auth message; on failure it has closed the connection.
func (wc *wsConn) authenticate() bool {
	timer := time.AfterFunc(wsAuthTimeout, func() {
		wc.fail("", spec.ErrMissingToken.With("No auth message within the time allowed"))
	})
	_, data, err := wc.c.Read(context.Background())
	if !timer.Stop() || err != nil {
		return false
	}
	var m struct {
		Type        string `json:"type"`
		ID          string `json:"id"`
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(data, &m) != nil || m.Type != "auth" || m.AccessToken == "" {
		wc.fail(m.ID, spec.ErrMissingToken.With(`The first message must be {"type":"auth","access_token":...}`))
		return false
	}
	caller, err := wc.a.accounts.Authenticate(wc.ctx, m.AccessToken)
	if err != nil {
		wc.fail(m.ID, err)
		return false
	}
	wc.caller, wc.token = caller, m.AccessToken
	if m.ID != "" {
		wc.reply(wsMessage{Type: "ack", ID: m.ID, Body: map[string]string{"user_id": string(caller.UserID), "device_id": caller.DeviceID}})
	}
	return true
}

// handle answers one client request with an ack or an error.
func (wc *wsConn) handle(data []byte) {
	var m struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	if err := unmarshalObject(data, &m); err != nil {
		wc.replyError("", err)
		return
	}
	body, then, err := wc.call(m.Type, data)
	if err != nil {
		wc.replyError(m.ID, err)
		return
	}
	if body == nil {
		body = empty
	}
	wc.reply(wsMessage{Type: "ack", ID: m.ID, Body: body})
	if then != nil {
		then()
	}
}

// call runs one request: one case per operation, calling what the HTTP endpoint calls. then, if
// set, runs after the ack is queued.
func (wc *wsConn) call(typ string, data []byte) (body any, then func(), err error) {
	ctx := context.WithValue(wc.ctx, keyCaller, wc.caller)
	switch typ {
	case "sync_params":
		return wc.syncParams(data)
	case "send":
		body, err = wc.send(ctx, data)
		return body, nil, err
	case "typing":
		return empty, nil, wc.typing(ctx, data)
	case "receipt":
		return empty, nil, wc.receipt(ctx, data)
	case "presence":
		return empty, nil, wc.presence(ctx, data)
	case "to_device":
		return empty, nil, wc.toDevice(ctx, data)
	case "auth":
		return nil, nil, spec.ErrBadState.With("Already authenticated")
	default:
		return nil, nil, spec.ErrUnrecognized.Withf("Unknown message type %q", truncate(typ, 64))
	}
}

// wsSend is {"type":"send"}: PUT /rooms/{room_id}/send/{event_type}/{txn_id} with content as body.
type wsSend struct {
	RoomID    string          `json:"room_id"`
	EventType string          `json:"event_type"`
	TxnID     string          `json:"txn_id"`
	Content   json.RawMessage `json:"content"`
}

// send sends a room event, idempotent per device on (room, type, txn_id) exactly like PUT /send:
// the same txn_id over HTTP or WebSocket gives the same event.
func (wc *wsConn) send(ctx context.Context, data []byte) (any, error) {
	var m wsSend
	if err := unmarshalObject(data, &m); err != nil {
		return nil, err
	}
	switch {
	case !strings.HasPrefix(m.RoomID, "!") || len(m.RoomID) > 255:
		return nil, spec.ErrInvalidParam.Withf("Invalid room ID %q", truncate(m.RoomID, 64))
	case m.EventType == "" || len(m.EventType) > 255:
		return nil, spec.ErrInvalidParam.With("Invalid event type")
	case m.TxnID == "":
		return nil, missing("txn_id")
	case !isJSONObject(m.Content):
		return nil, spec.ErrBadJSON.With("content must be an object")
	}
	c := wc.caller
	id, err := wc.a.rooms.Send(ctx, m.RoomID, room.Sender{UserID: string(c.UserID), Localpart: c.Localpart, DeviceID: c.DeviceID,
		TxnID: m.TxnID}, m.EventType, m.Content)
	if err != nil {
		return nil, roomErr(err)
	}
	return map[string]string{"event_id": id}, nil
}

// syncParams is {"type":"sync_params"}: restart the stream from since with these parameters. They
// are checked first; a refusal leaves the running stream as it was.
func (wc *wsConn) syncParams(data []byte) (any, func(), error) {
	var m struct {
		Since       string          `json:"since"`
		Filter      json.RawMessage `json:"filter"` // a filter ID or an inline filter object
		FullState   bool            `json:"full_state"`
		SetPresence string          `json:"set_presence"`
	}
	if err := unmarshalObject(data, &m); err != nil {
		return nil, nil, err
	}
	q := url.Values{}
	if f := strings.TrimSpace(string(m.Filter)); f != "" && f != "null" {
		var id string
		switch {
		case json.Unmarshal(m.Filter, &id) == nil:
			q.Set("filter", id)
		case strings.HasPrefix(f, "{"):
			q.Set("filter", f)
		default:
			return nil, nil, spec.ErrBadJSON.With("filter must be a filter ID or a filter object")
		}
	}
	if m.SetPresence != "" {
		q.Set("set_presence", m.SetPresence)
	}
	fullState := ""
	if m.FullState {
		fullState = "true"
	}
	st := wc.a.newSyncStream(wc.caller, wc.token, q, m.Since, fullState)
	resp, deliver, err := st.poll(wc.ctx, 0)
	if err != nil {
		return nil, nil, err
	}
	wc.stopSync()
	if !deliver {
		resp = nil
	}
	return empty, func() { wc.runSync(st, resp) }, nil
}

// startSync checks the stream's parameters with a first poll that does not wait and starts the
// sync loop; on failure it has closed the connection.
func (wc *wsConn) startSync(st *syncStream) bool {
	resp, deliver, err := st.poll(wc.ctx, 0)
	if err != nil {
		wc.fail("", err)
		return false
	}
	if !deliver {
		resp = nil
	}
	wc.runSync(st, resp)
	return true
}

// runSync starts the sync loop: first (if any), then every delivered poll, in order.
func (wc *wsConn) runSync(st *syncStream, first *hsync.Response) {
	ctx, cancel := context.WithCancel(wc.ctx)
	done := make(chan struct{})
	wc.syncCancel, wc.syncDone = cancel, done
	go func() {
		defer close(done)
		var buf []byte // the message being sent, reused once written
		ok := true
		if first != nil {
			buf, ok = wc.push(ctx, buf, first)
		}
		for ok {
			resp, deliver, err := st.poll(ctx, wsPollTimeout)
			if err != nil {
				if ctx.Err() == nil {
					wc.fail("", err)
				}
				return
			}
			if deliver {
				buf, ok = wc.push(ctx, buf, resp)
			}
		}
	}()
}

// stopSync stops the sync loop and waits until it has stopped, so nothing it produced follows.
func (wc *wsConn) stopSync() {
	if wc.syncCancel != nil {
		wc.syncCancel()
		<-wc.syncDone
		wc.syncCancel, wc.syncDone = nil, nil
	}
}

// push sends a sync message built in buf, waiting for room in the queue: a slow reader gets fewer,
// larger updates. It returns the buffer to build the next message in (buf's array unless the
// message was queued), and false once the loop should end.
func (wc *wsConn) push(ctx context.Context, buf []byte, resp *hsync.Response) ([]byte, bool) {
	data := append(buf[:0], `{"type":"sync","next_batch":`...)
	data = strconv.AppendQuote(data, resp.NextBatch) // tokens are plain ASCII
	data = append(data, `,"body":`...)
	data = append(resp.AppendJSON(data), '}')
	queued, ok := wc.emit(ctx, data, true)
	if queued || cap(data) > wsMaxKeptBuffer {
		data = nil
	}
	return data, ok
}

// emit writes data when no other goroutine is writing, or queues it for that one. With wait (the
// sync loop) it waits while the queue is full, until ctx ends; without, a full queue means the
// client does not keep up. queued says data was queued (its array now belongs to the queue); ok
// is false if it was dropped (ctx ended, or shut down).
func (wc *wsConn) emit(ctx context.Context, data []byte, wait bool) (queued, ok bool) {
	if ctx.Err() != nil {
		return false, false
	}
	wc.outMu.Lock()
	for {
		select {
		case <-wc.closing: // nothing new after a shutdown (fail sends its error before)
			wc.outMu.Unlock()
			return false, false
		default:
		}
		if !wc.writing {
			wc.writing = true
			wc.outMu.Unlock()
			wc.write(data)
			return false, true
		}
		if len(wc.queue) < wsQueueSize {
			wc.queue = append(wc.queue, data)
			wc.outMu.Unlock()
			return true, true
		}
		wc.outMu.Unlock()
		if !wait {
			wc.tooSlow()
			return false, false
		}
		select {
		case <-wc.room:
		case <-wc.closing:
		case <-ctx.Done():
			return false, false
		}
		wc.outMu.Lock()
	}
}

// write writes data and then what is queued, in order, on the goroutine that found the socket
// idle (emit made it the writer). Once shut down and the queue written, it lets the closer close.
// A write blocked for wsWriteTimeout shuts the connection down as too slow.
func (wc *wsConn) write(data []byte) {
	for {
		wc.stall.Reset(wsWriteTimeout)
		// Not ctx: the library drops the connection when a write's context ends.
		err := wc.c.Write(context.Background(), websocket.MessageText, data)
		wc.stall.Stop()
		if err != nil { // the connection is gone
			wc.shutdown(websocket.StatusAbnormalClosure, "")
			_ = wc.c.CloseNow()
			wc.outMu.Lock()
			wc.broken, wc.queue = true, nil
			close(wc.drained) // writing stays true: nothing more is written
			wc.outMu.Unlock()
			return
		}
		wc.outMu.Lock()
		if len(wc.queue) > 0 {
			data = wc.queue[0]
			wc.queue[0] = nil
			wc.queue = wc.queue[1:]
			select {
			case wc.room <- struct{}{}:
			default:
			}
			wc.outMu.Unlock()
			continue
		}
		select {
		case <-wc.closing:
			close(wc.drained) // writing stays true: nothing more is written
		default:
			wc.writing = false
		}
		wc.outMu.Unlock()
		return
	}
}

// reply sends an answer, waiting while the queue is full: a client that sends requests faster
// than it reads the answers is slowed down (its requests are not read meanwhile), not cut off; one
// that stops reading altogether is found too slow by the blocked write (wsWriteTimeout).
func (wc *wsConn) reply(m wsMessage) {
	data, err := json.Marshal(m)
	if err != nil {
		wc.fail(m.ID, err)
		return
	}
	wc.emit(wc.ctx, data, true)
}

// errorJSON is {"type":"error","id":...,"errcode":...,"error":...} with any extra fields of the
// Matrix error (soft_logout, retry_after_ms). An internal error is logged and sent as M_UNKNOWN.
func (wc *wsConn) errorJSON(id string, err error) ([]byte, *spec.Error) {
	var se *spec.Error
	if !errors.As(err, &se) {
		wc.log.ErrorContext(wc.ctx, "sync websocket: internal error", "err", err, "user_id", string(wc.caller.UserID))
		se = spec.ErrUnknown
	}
	e := se.WithField("type", "error")
	if id != "" {
		e = e.WithField("id", id)
	}
	data, _ := json.Marshal(e)
	return data, se
}

// replyError queues an error answer (as reply does).
func (wc *wsConn) replyError(id string, err error) {
	data, _ := wc.errorJSON(id, err)
	wc.emit(wc.ctx, data, true)
}

// fail sends the error, then closes: 4001 for token errors, 4003 for refused parameters, 1011 for
// internal errors.
func (wc *wsConn) fail(id string, err error) {
	data, se := wc.errorJSON(id, err)
	code := wsCloseBadParams
	switch se.Code {
	case spec.ErrMissingToken.Code, spec.ErrUnknownToken.Code:
		code = wsCloseUnauthorized
	case spec.ErrUnknown.Code:
		code = websocket.StatusInternalError
	}
	wc.emit(context.Background(), data, false) // also when the connection's work has ended
	wc.shutdown(code, truncate(se.Code+": "+se.Message, 120))
}

// tooSlow shuts down a client that does not keep up.
func (wc *wsConn) tooSlow() {
	wc.shutdown(wsCloseTooSlow, wsReasonTooSlow)
}

// shutdown (once, from any goroutine) stops the connection's work and has the closer close it
// with code and reason after what is queued; after wsCloseGrace the connection is dropped anyway.
func (wc *wsConn) shutdown(code websocket.StatusCode, reason string) {
	wc.once.Do(func() {
		wc.code, wc.reason = code, reason
		wc.cancel()
		wc.grace = time.AfterFunc(wsCloseGrace, func() { _ = wc.c.CloseNow() })
		close(wc.closing)
		wc.outMu.Lock()
		if !wc.writing { // else the goroutine writing closes drained once the queue is written
			wc.writing = true
			close(wc.drained)
		}
		wc.outMu.Unlock()
		if code == wsCloseTooSlow && testHookWSTooSlow != nil {
			testHookWSTooSlow()
		}
	})
}

// closer closes the connection with the shutdown's code and reason once what was queued before
// it has been written (the close handshake waits for the client's answer, so it has a goroutine
// of its own).
func (wc *wsConn) closer() {
	defer wc.wg.Done()
	<-wc.drained
	wc.outMu.Lock()
	broken := wc.broken
	wc.outMu.Unlock()
	if !broken {
		_ = wc.c.Close(wc.code, wc.reason)
	}
}

// pinger pings every wsPingInterval; no pong within wsWriteTimeout means the client does not keep
// up (or is gone).
func (wc *wsConn) pinger() {
	defer wc.wg.Done()
	t := time.NewTicker(wsPingInterval)
	defer t.Stop()
	for {
		select {
		case <-wc.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), wsWriteTimeout)
			err := wc.c.Ping(ctx)
			cancel()
			if err != nil {
				wc.tooSlow()
				return
			}
		}
	}
}

// truncate cuts s to at most n bytes (on a rune boundary) for messages and close reasons.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// wsTyping is {"type":"typing"}: PUT /rooms/{room_id}/typing/{own user} with typing and timeout.
type wsTyping struct {
	RoomID  string `json:"room_id"`
	Typing  *bool  `json:"typing"`
	Timeout int64  `json:"timeout"`
}

func (wc *wsConn) typing(ctx context.Context, data []byte) error {
	var m wsTyping
	if err := unmarshalObject(data, &m); err != nil {
		return err
	}
	if !strings.HasPrefix(m.RoomID, "!") || len(m.RoomID) > 255 {
		return spec.ErrInvalidParam.Withf("Invalid room ID %q", truncate(m.RoomID, 64))
	}
	if m.Typing == nil {
		return missing("typing")
	}
	return wc.a.syncer.Typing().Set(ctx, m.RoomID, string(wc.caller.UserID), *m.Typing, time.Duration(max(m.Timeout, 0))*time.Millisecond)
}

// wsReceipt is {"type":"receipt"}: POST /rooms/{room_id}/receipt/{receipt_type}/{event_id}.
type wsReceipt struct {
	RoomID      string  `json:"room_id"`
	ReceiptType string  `json:"receipt_type"`
	EventID     string  `json:"event_id"`
	ThreadID    *string `json:"thread_id"`
}

func (wc *wsConn) receipt(ctx context.Context, data []byte) error {
	var m wsReceipt
	if err := unmarshalObject(data, &m); err != nil {
		return err
	}
	if !strings.HasPrefix(m.RoomID, "!") || len(m.RoomID) > 255 {
		return spec.ErrInvalidParam.Withf("Invalid room ID %q", truncate(m.RoomID, 64))
	}
	if m.EventID == "" || m.ReceiptType == "" {
		return missing("event_id and receipt_type")
	}
	if m.ThreadID != nil && *m.ThreadID == "" {
		return spec.ErrInvalidParam.With("thread_id must be a non-empty string")
	}
	c := wc.caller
	return wc.a.syncer.Receipts().Post(ctx, receipt.User{UserID: string(c.UserID), Localpart: c.Localpart}, m.RoomID,
		receipt.Mark{Type: m.ReceiptType, EventID: m.EventID, ThreadID: m.ThreadID})
}

// wsPresence is {"type":"presence"}: PUT /presence/{own user}/status.
type wsPresence struct {
	Presence  *string `json:"presence"`
	StatusMsg string  `json:"status_msg"`
}

func (wc *wsConn) presence(ctx context.Context, data []byte) error {
	var m wsPresence
	if err := unmarshalObject(data, &m); err != nil {
		return err
	}
	if m.Presence == nil {
		return missing("presence")
	}
	return wc.a.syncer.Presence().Set(ctx, string(wc.caller.UserID), *m.Presence, m.StatusMsg)
}
