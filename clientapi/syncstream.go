package clientapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
	a         *API
	base      *http.Request // the upgrade or SSE request: its URL is replaced per poll
	caller    account.Caller
	token     string
	checked   time.Time  // when the token was last found valid
	params    url.Values // filter and set_presence, passed to every poll
	since     string     // the next_batch of the last delivered response ("" before the first)
	fullState string     // the full_state parameter, for the first poll only
	polled    bool       // a poll ran already
}

// newSyncStream starts a stream at since with the /sync query parameters q (since, timeout and
// full_state in q are ignored: the stream sets them per poll).
func (a *API) newSyncStream(r *http.Request, caller account.Caller, token string, q url.Values, since, fullState string) *syncStream {
	params := url.Values{}
	for k, v := range q {
		switch k {
		case "since", "timeout", "full_state":
		default:
			params[k] = v
		}
	}
	return &syncStream{a: a, base: r, caller: caller, token: token, checked: time.Now(), params: params,
		since: since, fullState: fullState}
}

// poll is one call of the /sync handler from the stream's position, waiting up to wait for news.
// deliver says whether to send the response: an initial or full_state sync, or one that returned
// before its timeout or has something in it. Only a delivered response moves the position, so a
// response misjudged as empty is not lost: the next poll reads it again, and returns at once.
func (st *syncStream) poll(ctx context.Context, wait time.Duration) (resp *hsync.Response, deliver bool, err error) {
	if time.Since(st.checked) > streamAuthRecheck {
		if _, err := st.a.accounts.Authenticate(ctx, st.token); err != nil {
			return nil, false, err
		}
		st.checked = time.Now()
	}
	q := make(url.Values, len(st.params)+3)
	for k, v := range st.params {
		q[k] = v
	}
	q.Set("timeout", strconv.FormatInt(wait.Milliseconds(), 10))
	if st.since != "" {
		q.Set("since", st.since)
	}
	if st.fullState != "" {
		q.Set("full_state", st.fullState)
	}
	pctx := context.WithValue(ctx, keyCaller, st.caller)
	if st.polled {
		// Only the client's own token (the first poll's since) acknowledges to-device messages:
		// later positions are the server's, and what it wrote may not have arrived.
		pctx = context.WithValue(pctx, keyStreamPoll, true)
	}
	st.polled = true
	r := st.base.WithContext(pctx)
	u := *r.URL
	u.RawQuery = q.Encode()
	r.URL = &u

	start := time.Now()
	v, err := st.a.sync(r)
	if err != nil {
		return nil, false, err
	}
	resp, ok := v.(*hsync.Response)
	if !ok {
		return nil, false, fmt.Errorf("sync stream: the sync handler answered %T", v)
	}
	deliver = st.since == "" || st.fullState == "true" || (wait > 0 && time.Since(start) < wait) || !resp.Empty()
	st.fullState = ""
	if deliver {
		st.since = resp.NextBatch
	}
	return resp, deliver, nil
}
