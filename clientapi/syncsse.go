package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// sseKeepAlive is how long an SSE stream may stay silent before the server writes a keep-alive
// comment (a variable so tests can shorten it). Proxies commonly drop idle connections after 30-60 s.
var sseKeepAlive = 15 * time.Second

// sseWriteTimeout bounds one write to an SSE client: a client that stops reading is dropped
// instead of holding the handler forever (it resumes with Last-Event-ID). The deadline is moved
// on only when it has come a thirtieth of this nearer (setting it updates a timer of the runtime's
// poller: once per event otherwise), so a write has between 29/30 and all of it to complete.
var sseWriteTimeout = 30 * time.Second

// syncSSE is GET /_matrix/client/unstable/dev.hearth/sync/sse: the sync stream as Server-Sent
// Events. It takes the query parameters of /sync (timeout is ignored: the server long-polls for
// the client). Each sync response with something in it is one event, "id: <next_batch>",
// "event: sync", "data: <the response on one line>"; a Last-Event-ID header resumes after that
// token and wins over since. Quiet periods get ": keep-alive" comments every sseKeepAlive. The
// stream ends when the client goes away, or after an "event: error" whose data is a Matrix error
// (an invalid token, or an internal error): reconnect from the last id.
func (a *API) syncSSE(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since := q.Get("since")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		since = id
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(a.streams, cancel)() // server shutdown ends the stream
	st := a.newSyncStream(callerOf(r), accessToken(r), q, since, q.Get("full_state"))
	// The first poll does not wait, so bad parameters are answered as for /sync (HTTP 400 with a
	// Matrix error) and the stream starts at once.
	resp, deliver, err := st.poll(ctx, 0)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: pass each event on, do not buffer the response
	w.WriteHeader(http.StatusOK)
	keepAlive := sseKeepAlive
	var buf []byte         // the event being written, reused
	var deadline time.Time // of writes; moved on only when nearer than sseWriteTimeout-step
	step := sseWriteTimeout / 30
	for {
		if now := time.Now(); deadline.Sub(now) < sseWriteTimeout-step {
			deadline = now.Add(sseWriteTimeout)
			_ = rc.SetWriteDeadline(deadline)
		}
		if deliver {
			buf = appendSSESync(buf[:0], resp)
			_, err = w.Write(buf)
		} else {
			_, err = io.WriteString(w, ": keep-alive\n\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return // the client is gone or stopped reading
		}
		if cap(buf) > sseMaxKeptBuffer {
			buf = nil // an initial sync: not kept for the small responses that follow
		}
		resp, deliver, err = st.poll(ctx, keepAlive)
		if err != nil {
			if ctx.Err() == nil {
				writeSSEError(w, r, a, err)
				_ = rc.Flush()
			}
			return
		}
	}
}

// sseMaxKeptBuffer bounds the event buffer an SSE stream keeps between events.
const sseMaxKeptBuffer = 64 << 10

// appendSSESync appends one sync response as an SSE event. AppendJSON never writes a newline, so
// the data is a single "data:" line.
func appendSSESync(buf []byte, resp *hsync.Response) []byte {
	buf = append(buf, "id: "...)
	buf = append(buf, resp.NextBatch...)
	buf = append(buf, "\nevent: sync\ndata: "...)
	buf = resp.AppendJSON(buf)
	return append(buf, "\n\n"...)
}

// writeSSEError ends a stream with an "error" event carrying the Matrix error; internal causes are
// logged and sent as M_UNKNOWN.
func writeSSEError(w io.Writer, r *http.Request, a *API, err error) {
	var se *spec.Error
	if !errors.As(err, &se) {
		a.log.ErrorContext(r.Context(), "sync stream failed", "transport", "sse", "err", err)
		se = spec.ErrUnknown
	}
	body, _ := json.Marshal(se)
	_, _ = io.WriteString(w, "event: error\ndata: "+string(body)+"\n\n")
}
