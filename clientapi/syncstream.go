package clientapi

import (
	"context"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/account"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// The streaming transports of the sync stream (docs/sync.md): Server-Sent Events (syncsse.go) and
// WebSocket (syncws.go). Both read the stream the way a client polling /sync would, by calling
// the /sync handler in a loop from the last next_batch they delivered; there is no second
// implementation of sync, so the four transports cannot disagree on what a client sees.

// streamPrefix is the path prefix of our unstable endpoints.
const streamPrefix = "/_matrix/client/unstable/dev.hearth"

// streamAuthRecheck is how often a long-lived stream checks that its access token is still valid,
// so a logout (or an expired token) also ends the streams that token opened.
const streamAuthRecheck = 30 * time.Second

// routesSyncStreams mounts the SSE and WebSocket transports. The WebSocket authenticates itself:
// browsers cannot set headers on it, so the token may also arrive as its first message.
func (a *API) routesSyncStreams(r chi.Router) {
	r.With(a.requireAuth).Get(streamPrefix+"/sync/sse", a.syncSSE)
	r.Get(streamPrefix+"/sync/ws", a.syncWS)
}

// syncStream is one connection's position in the sync stream.
type syncStream struct {
	a       *API
	caller  account.Caller
	token   string
	checked time.Time  // when the token was last found valid
	params  url.Values // the /sync parameters of the first poll (since and timeout left out)
	req     hsync.Request
	since   string // the next_batch of the last delivered response ("" before the first)
	polled  bool   // a poll ran already: req holds the parsed parameters
}

// newSyncStream starts a stream at since with the /sync query parameters q (since, timeout and
// full_state in q are ignored: the stream sets them per poll; fullState is for the first poll
// only).
func (a *API) newSyncStream(caller account.Caller, token string, q url.Values, since, fullState string) *syncStream {
	params := url.Values{}
	for k, v := range q {
		switch k {
		case "since", "timeout", "full_state":
		default:
			params[k] = v
		}
	}
	if fullState != "" {
		params.Set("full_state", fullState)
	}
	return &syncStream{a: a, caller: caller, token: token, checked: time.Now(), params: params, since: since}
}

// poll is one call of the /sync service from the stream's position, waiting up to wait for news.
// The parameters are read (and refused, as /sync would) on the first poll and kept. deliver says
// whether to send the response: an initial or full_state sync, or one that returned before its
// timeout or has something in it. Only a delivered response moves the position, so a response
// misjudged as empty is not lost: the next poll reads it again, and returns at once.
func (st *syncStream) poll(ctx context.Context, wait time.Duration) (resp *hsync.Response, deliver bool, err error) {
	if time.Since(st.checked) > streamAuthRecheck {
		if _, err := st.a.accounts.Authenticate(ctx, st.token); err != nil {
			return nil, false, err
		}
		st.checked = time.Now()
	}
	if !st.polled {
		if st.req, err = st.a.syncRequest(ctx, st.caller, syncParamsOf(st.params)); err != nil {
			return nil, false, err
		}
		st.params = nil
	} else {
		st.req.FullState = false // the first poll's only
		// Only the client's own token (the first poll's since) acknowledges to-device messages:
		// later positions are the server's, and what it wrote may not have arrived.
		st.req.NoAck = true
	}
	st.polled = true
	st.req.Since = st.since
	st.req.Timeout = min(wait.Truncate(time.Millisecond), maxSyncTimeout)

	start := time.Now()
	resp, err = st.a.syncer.Sync(ctx, st.req)
	if err != nil {
		return nil, false, err
	}
	deliver = st.since == "" || st.req.FullState || (wait > 0 && time.Since(start) < wait) || !resp.Empty()
	if deliver {
		st.since = resp.NextBatch
	}
	return resp, deliver, nil
}
