package clientapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/spec"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// maxSyncTimeout caps the long-poll timeout a client may ask for.
const maxSyncTimeout = 5 * time.Minute

// routesSync mounts /sync under both client API prefixes (on the top router, behind
// authentication: Routes).
func (a *API) routesSync(r chi.Router) {
	r.Get("/_matrix/client/v3/sync", a.sync)
	r.Get("/_matrix/client/r0/sync", a.sync)
}

// sync is GET /_matrix/client/v3/sync. It writes the response itself, into a pooled buffer: a
// long-polling client sends one /sync per response, so this is the busiest handler of all.
func (a *API) sync(w http.ResponseWriter, r *http.Request) {
	req, err := a.syncRequest(r.Context(), callerOf(r), parseSyncParams(r.URL.RawQuery))
	var resp *hsync.Response
	if err == nil {
		resp, err = a.syncer.Sync(r.Context(), req)
	}
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	bp := syncBuffers.Get().(*[]byte)
	body := resp.AppendJSON((*bp)[:0])
	h := w.Header()
	h["Content-Type"] = spec.JSONContentType
	if len(body) > smallSyncBody {
		// Sent at once, before the handler returns: net/http would chunk it without the length.
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	// A smaller body stays in net/http's buffer until the handler returns, and net/http adds
	// its Content-Length then, without allocating (most long-poll responses).
	_, _ = w.Write(body)
	if cap(body) <= maxPooledSyncBuffer { // an initial sync's buffer is not kept
		*bp = body
		syncBuffers.Put(bp)
	}
}

// smallSyncBody is net/http's buffer before it must choose between Content-Length and chunked
// encoding (bufferBeforeChunkingSize in net/http/server.go): a body up to this size written in
// one Write is still buffered when the handler returns, and sent with its length.
const smallSyncBody = 2048

// syncBuffers hold the bodies of /sync responses while they are written.
var syncBuffers = gosync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// maxPooledSyncBuffer bounds the buffers kept in syncBuffers.
const maxPooledSyncBuffer = 64 << 10

// syncParams are the /sync query parameters, "" when absent (as url.Values.Get answers).
type syncParams struct {
	since, timeout, fullState, setPresence, filter string
}

// syncParamsOf picks the /sync parameters out of parsed query values.
func syncParamsOf(q url.Values) syncParams {
	return syncParams{since: q.Get("since"), timeout: q.Get("timeout"), fullState: q.Get("full_state"),
		setPresence: q.Get("set_presence"), filter: q.Get("filter")}
}

// parseSyncParams reads the /sync parameters of a raw query string as
// syncParamsOf(url.ParseQuery(raw)) would, without building the map: a long poll's query is a few
// plain parameters (a token, a filter ID, a timeout) and one per response. Queries with escapes
// (an inline filter) or with very many parameters go through net/url.
func parseSyncParams(raw string) syncParams {
	if strings.ContainsAny(raw, "%+;") || strings.Count(raw, "&") >= maxPlainSyncParams {
		q, _ := url.ParseQuery(raw) // as URL.Query: a malformed pair is skipped
		return syncParamsOf(q)
	}
	var p syncParams
	var seen uint8
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		var dst *string
		var bit uint8
		switch k {
		case "since":
			dst, bit = &p.since, 1
		case "timeout":
			dst, bit = &p.timeout, 2
		case "full_state":
			dst, bit = &p.fullState, 4
		case "set_presence":
			dst, bit = &p.setPresence, 8
		case "filter":
			dst, bit = &p.filter, 16
		default:
			continue
		}
		if seen&bit == 0 { // the first value counts, as url.Values.Get's
			*dst, seen = v, seen|bit
		}
	}
	return p
}

// maxPlainSyncParams sends queries with more parameters to net/url, which refuses more than its
// limit (GODEBUG urlmaxqueryparams, 10,000 by default) as a whole.
const maxPlainSyncParams = 64

// syncRequest reads the /sync query parameters for caller c.
func (a *API) syncRequest(ctx context.Context, c account.Caller, q syncParams) (hsync.Request, error) {
	req := hsync.Request{UserID: string(c.UserID), Localpart: c.Localpart, DeviceID: c.DeviceID, Since: q.since}
	if s := q.timeout; s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return req, spec.ErrInvalidParam.With("timeout must be an integer (milliseconds)")
		}
		req.Timeout = min(time.Duration(max(ms, 0))*time.Millisecond, maxSyncTimeout)
	}
	switch q.fullState {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return req, spec.ErrInvalidParam.With("full_state must be true or false")
	}
	switch req.SetPresence = q.setPresence; req.SetPresence {
	case "", "online", "offline", "unavailable":
	default:
		return req, spec.ErrInvalidParam.With("set_presence must be online, offline or unavailable")
	}
	f, err := a.syncFilter(ctx, c.Localpart, q.filter)
	if err != nil {
		return req, err
	}
	req.Filter = f
	return req, nil
}

// syncFilter reads the filter parameter: inline JSON when it starts with "{", else a filter ID of
// the user.
func (a *API) syncFilter(ctx context.Context, localpart, raw string) (filter.Filter, error) {
	if raw == "" {
		return filter.Filter{}, nil
	}
	data := []byte(raw)
	if !strings.HasPrefix(strings.TrimSpace(raw), "{") {
		k := parsedFilterKey{localpart, raw}
		a.filtersMu.Lock()
		f, ok := a.filters[k]
		a.filtersMu.Unlock()
		if ok {
			return f, nil // stored filters never change
		}
		stored, err := a.accounts.Filter(ctx, localpart, raw)
		var se *spec.Error
		if errors.As(err, &se) && se.Code == spec.ErrNotFound.Code {
			return filter.Filter{}, spec.ErrInvalidParam.Withf("No such filter %q", raw)
		}
		if err != nil {
			return filter.Filter{}, err
		}
		f, err = filter.Parse(stored)
		if err != nil {
			return f, err
		}
		a.filtersMu.Lock()
		if a.filters == nil || len(a.filters) >= maxParsedFilters {
			a.filters = map[parsedFilterKey]filter.Filter{}
			a.filterTexts = map[string]filter.Filter{}
		}
		// Users whose clients store the same filter share one parsed form, and so the sync
		// service's plan of it (found by the identity of its parts).
		if same, ok := a.filterTexts[string(stored)]; ok {
			f = same
		} else {
			a.filterTexts[string(stored)] = f
		}
		a.filters[k] = f
		a.filtersMu.Unlock()
		return f, nil
	}
	return filter.Parse(data)
}

// parsedFilterKey names a stored filter: its owner and ID.
type parsedFilterKey struct{ localpart, id string }

// maxParsedFilters bounds the parsed stored filters kept (every /sync names one); when full the
// cache starts over.
const maxParsedFilters = 50_000
