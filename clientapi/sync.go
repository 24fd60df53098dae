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

// routesSync mounts /sync.
func (a *API) routesSync(r chi.Router) {
	r.Get("/sync", a.sync)
}

// sync is GET /_matrix/client/v3/sync. It writes the response itself, into a pooled buffer: a
// long-polling client sends one /sync per response, so this is the busiest handler of all.
func (a *API) sync(w http.ResponseWriter, r *http.Request) {
	req, err := a.syncRequest(r.Context(), callerOf(r), r.URL.Query())
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
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	if cap(body) <= maxPooledSyncBuffer { // an initial sync's buffer is not kept
		*bp = body
		syncBuffers.Put(bp)
	}
}

// syncBuffers hold the bodies of /sync responses while they are written.
var syncBuffers = gosync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// maxPooledSyncBuffer bounds the buffers kept in syncBuffers.
const maxPooledSyncBuffer = 64 << 10

// syncRequest reads the /sync query parameters for caller c.
func (a *API) syncRequest(ctx context.Context, c account.Caller, q url.Values) (hsync.Request, error) {
	req := hsync.Request{UserID: string(c.UserID), Localpart: c.Localpart, DeviceID: c.DeviceID, Since: q.Get("since")}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return req, spec.ErrInvalidParam.With("timeout must be an integer (milliseconds)")
		}
		req.Timeout = min(time.Duration(max(ms, 0))*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return req, spec.ErrInvalidParam.With("full_state must be true or false")
	}
	switch req.SetPresence = q.Get("set_presence"); req.SetPresence {
	case "", "online", "offline", "unavailable":
	default:
		return req, spec.ErrInvalidParam.With("set_presence must be online, offline or unavailable")
	}
	f, err := a.syncFilter(ctx, c.Localpart, q.Get("filter"))
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
