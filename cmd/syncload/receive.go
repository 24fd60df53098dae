package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// streamPrefix is the path prefix of the server's unstable sync transports (docs/sync.md).
const streamPrefix = "/_matrix/client/unstable/dev.hearth"

// receiver is one receiving user, its position in the stream and what it saw. Only its own
// goroutine touches it while it runs.
type receiver struct {
	user
	filterID string
	since    string    // the last next_batch read: where a new request or connection starts
	poll     *pollConn // long polls: the receiver's connection (rawpoll.go)
	path     []byte    // long polls: the request's path, rebuilt in place for each

	// fan-out accounting
	seen                []uint16        // per message: how often it arrived
	delay               []time.Duration // per message: send -> first arrival
	lastSeq             int
	outOfOrder, limited int

	// transport counters
	responses  int // sync responses, SSE sync events or WebSocket sync messages read
	errors     int // failed requests or connections (retried from since)
	reconnects int // streams that ended and were opened again from since
	tooSlow    int // WebSocket closes 4002
	keepAlives int // SSE comments
	protocol   int // protocol violations: id or next_batch not the body's, unknown events, bad JSON
	lastErr    string
}

// fatalError ends a receiver for good (a refused token or refused parameters): retrying cannot help.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }

// reader runs receivers on one transport.
type reader struct {
	h         *hs
	c         *config
	transport string
	connSem   chan struct{} // SSE and WebSocket connections being opened
	responses atomic.Int64  // sync responses read, all receivers
}

// handler gets every sync response a receiver reads, in order, on the receiver's goroutine; at
// is when it had been read completely (the tool's clock).
type handler func(r *receiver, at time.Duration, s *syncResponse)

// run reads the stream for r from r.since until ctx ends. ready is called once, when the first
// long poll is sent or the first stream is open. It returns a fatalError if the server refuses
// the receiver for good, otherwise nil when ctx ends.
func (rd *reader) run(ctx context.Context, r *receiver, ready func(), handle handler) error {
	readyOnce := func() {
		if ready != nil {
			ready()
			ready = nil
		}
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		var err error
		switch rd.transport {
		case "longpoll":
			err = rd.longPoll(ctx, r, readyOnce, handle)
		case "sse":
			err = rd.sse(ctx, r, readyOnce, handle)
		case "ws":
			err = rd.ws(ctx, r, readyOnce, handle)
		}
		if ctx.Err() != nil {
			return nil
		}
		var fe fatalError
		if errors.As(err, &fe) {
			r.lastErr = err.Error()
			return err
		}
		if err == nil { // the stream ended cleanly (or a long poll came back): go on at once
			backoff = 100 * time.Millisecond
			continue
		}
		r.errors++
		r.lastErr = err.Error()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	return nil
}

// longPoll is one GET /sync from r.since.
func (rd *reader) longPoll(ctx context.Context, r *receiver, ready func(), handle handler) error {
	ready()
	if r.poll == nil {
		var err error
		if r.poll, err = newPollConn(rd.h.base); err != nil {
			return fatalError{err}
		}
	}
	r.path = append(r.path[:0], "/_matrix/client/v3/sync?"...)
	r.path = appendSyncQuery(r.path, r.filterID, r.since, rd.c.pollTimeout, rd.c.setPresence)
	// The server answers after the timeout at the latest; allow it some slack before giving up.
	raw, at, err := r.poll.get(ctx, rd.h, r.path, r.token, max(rd.c.pollTimeout, 0)+60*time.Second)
	if err != nil {
		var me *matrixError
		if errors.As(err, &me) && (me.status == http.StatusUnauthorized || me.status == http.StatusBadRequest) {
			return fatalError{fmt.Errorf("GET /sync: %w", err)}
		}
		return err
	}
	var s syncResponse
	if err := decodeSync(raw, &s); err != nil || s.NextBatch == "" {
		r.protocol++
		return fmt.Errorf("GET /sync: not a sync response (%v)", err)
	}
	r.responses++
	rd.responses.Add(1)
	r.since = s.NextBatch
	handle(r, at, &s)
	return nil
}

// sse reads one SSE stream from r.since until it ends.
func (rd *reader) sse(ctx context.Context, r *receiver, ready func(), handle handler) error {
	q := syncQuery(r.filterID, r.since, -1, rd.c.setPresence)
	req, err := http.NewRequestWithContext(ctx, "GET", rd.h.base+streamPrefix+"/sync/sse?"+q, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Accept", "text/event-stream")
	if r.since != "" {
		req.Header.Set("Last-Event-ID", r.since) // as a browser resumes; the server prefers it to since
	}
	select {
	case rd.connSem <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	resp, err := rd.h.streams.Do(req)
	<-rd.connSem
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := &matrixError{status: resp.StatusCode, body: strings.TrimSpace(string(body))}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusBadRequest {
			return fatalError{fmt.Errorf("SSE: %w", err)}
		}
		return fmt.Errorf("SSE: %w", err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		r.protocol++
		return fmt.Errorf("SSE: Content-Type %q", ct)
	}
	ready()
	err = readSSE(resp.Body, rd.h, func(at time.Duration, ev sseEvent) error {
		switch ev.event {
		case "sync":
			var s syncResponse
			if err := decodeSync(ev.data, &s); err != nil {
				r.protocol++
				return fmt.Errorf("SSE: sync event is not a sync response: %v", err)
			}
			if !ev.hasID || ev.id != s.NextBatch {
				r.protocol++
				r.lastErr = fmt.Sprintf("SSE: event id %q is not next_batch %q", ev.id, s.NextBatch)
			}
			r.responses++
			rd.responses.Add(1)
			if s.NextBatch != "" {
				r.since = s.NextBatch
			}
			handle(r, at, &s)
			return nil
		case "error":
			return fmt.Errorf("SSE: error event %s", ev.data)
		default:
			r.protocol++
			r.lastErr = fmt.Sprintf("SSE: unknown event %q", ev.event)
			return nil
		}
	}, func() { r.keepAlives++ })
	if ctx.Err() != nil {
		return nil
	}
	r.reconnects++
	if err == nil || errors.Is(err, io.EOF) {
		return errors.New("SSE: the server ended the stream")
	}
	return err
}

type sseEvent struct {
	id, event string
	hasID     bool
	data      []byte
}

// readSSE parses an event stream (the WHATWG format: fields, comments, events ended by an empty
// line) and calls onEvent for every event, with the time its last line had been read.
func readSSE(body io.Reader, h *hs, onEvent func(at time.Duration, ev sseEvent) error, onComment func()) error {
	br := bufio.NewReaderSize(body, 64<<10)
	var ev sseEvent
	hasData := false
	var line []byte
	for {
		line = line[:0]
		for {
			chunk, err := br.ReadSlice('\n')
			line = append(line, chunk...)
			if err == nil {
				break
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				return err
			}
			if len(line) > maxResponse {
				return fmt.Errorf("SSE: a line over %d bytes", maxResponse)
			}
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 { // end of an event
			if hasData {
				ev.data = bytes.TrimSuffix(ev.data, []byte("\n"))
				if ev.event == "" {
					ev.event = "message"
				}
				if err := onEvent(h.now(), ev); err != nil {
					return err
				}
			}
			ev = sseEvent{}
			hasData = false
			continue
		}
		if line[0] == ':' {
			onComment()
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			ev.data = append(append(ev.data, value...), '\n')
			hasData = true
		case "id":
			ev.id, ev.hasID = string(value), true
		case "event":
			ev.event = string(value)
		}
	}
}

// wsIn is a message from the sync WebSocket, decoded in one pass by decodeWS: Body is a sync
// response for "sync" messages, and ignored otherwise.
type wsIn struct {
	Type      string       `json:"type"`
	ID        string       `json:"id"`
	NextBatch string       `json:"next_batch"`
	Body      syncResponse `json:"body"`
	Errcode   string       `json:"errcode"`
	Error     string       `json:"error"`
}

// ws reads one WebSocket from r.since until it closes.
func (rd *reader) ws(ctx context.Context, r *receiver, ready func(), handle handler) error {
	u := "ws" + strings.TrimPrefix(rd.h.base, "http") + streamPrefix + "/sync/ws?" + syncQuery(r.filterID, r.since, -1, rd.c.setPresence)
	select {
	case rd.connSem <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, resp, err := websocket.Dial(dialCtx, u, &websocket.DialOptions{
		HTTPClient: rd.h.ws,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + r.token}},
	})
	cancel()
	<-rd.connSem
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return fatalError{fmt.Errorf("WebSocket: %w", err)}
		}
		return fmt.Errorf("WebSocket: %w", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(maxResponse)
	ready()
	for {
		_, data, err := c.Read(ctx)
		at := rd.h.now()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.reconnects++
			switch websocket.CloseStatus(err) {
			case 4002: // too slow: resume from the last next_batch, at once
				r.tooSlow++
				return nil
			case 4001, 4003:
				return fatalError{fmt.Errorf("WebSocket: %w", err)}
			}
			return fmt.Errorf("WebSocket: %w", err)
		}
		var m wsIn
		if err := decodeWS(data, &m); err != nil {
			r.protocol++
			r.lastErr = fmt.Sprintf("WebSocket: a message that is not JSON or whose body is not a sync response: %v", err)
			continue
		}
		switch m.Type {
		case "sync":
			s := &m.Body
			if m.NextBatch != s.NextBatch {
				r.protocol++
				r.lastErr = fmt.Sprintf("WebSocket: next_batch %q is not the body's %q", m.NextBatch, s.NextBatch)
			}
			r.responses++
			rd.responses.Add(1)
			if s.NextBatch != "" {
				r.since = s.NextBatch
			}
			handle(r, at, s)
		case "error":
			r.errors++
			r.lastErr = fmt.Sprintf("WebSocket: error %s: %s", m.Errcode, m.Error)
		default: // acks: the receivers send no requests
			r.protocol++
			r.lastErr = fmt.Sprintf("WebSocket: unexpected message type %q", m.Type)
		}
	}
}
