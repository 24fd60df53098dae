package clientapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/spec"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// maxSyncTimeout caps the long-poll timeout a client may ask for.
const maxSyncTimeout = 5 * time.Minute

// routesSync mounts /sync.
func (a *API) routesSync(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Get("/sync", h(a.sync))
}

// sync is GET /_matrix/client/v3/sync.
func (a *API) sync(r *http.Request) (any, error) {
	c := callerOf(r)
	q := r.URL.Query()
	req := hsync.Request{UserID: string(c.UserID), Localpart: c.Localpart, DeviceID: c.DeviceID, Since: q.Get("since"),
		// A stream's own position is no proof that the client received what it was sent.
		NoAck: r.Context().Value(keyStreamPoll) != nil}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, spec.ErrInvalidParam.With("timeout must be an integer (milliseconds)")
		}
		req.Timeout = min(time.Duration(max(ms, 0))*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return nil, spec.ErrInvalidParam.With("full_state must be true or false")
	}
	switch req.SetPresence = q.Get("set_presence"); req.SetPresence {
	case "", "online", "offline", "unavailable":
	default:
		return nil, spec.ErrInvalidParam.With("set_presence must be online, offline or unavailable")
	}
	f, err := a.syncFilter(r, c.Localpart, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	req.Filter = f
	return a.syncer.Sync(r.Context(), req)
}

// syncFilter reads the filter parameter: inline JSON when it starts with "{", else a filter ID of
// the user.
func (a *API) syncFilter(r *http.Request, localpart, raw string) (filter.Filter, error) {
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
		stored, err := a.accounts.Filter(r.Context(), localpart, raw)
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
