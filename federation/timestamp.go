package federation

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// getTimestampToEvent is GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=: the
// event closest to ts in direction dir that the asking server may see.
func (a *API) getTimestampToEvent(r *http.Request) (any, error) {
	ts, forward, err := timestampParams(r)
	if err != nil {
		return nil, err
	}
	id, originTS, err := a.rooms.TimestampToEventForServer(r.Context(), Origin(r.Context()), chi.URLParam(r, "roomId"), ts, forward)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": id, "origin_server_ts": originTS}, nil
}

// timestampParams reads ts (milliseconds) and dir (f or b), both required.
func timestampParams(r *http.Request) (ts int64, forward bool, err error) {
	q := r.URL.Query()
	if q.Get("ts") == "" || q.Get("dir") == "" {
		return 0, false, spec.ErrMissingParam.With("ts and dir are required")
	}
	ts, err = strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return 0, false, spec.ErrInvalidParam.With("ts must be a timestamp in milliseconds")
	}
	switch q.Get("dir") {
	case "f":
		return ts, true, nil
	case "b":
		return ts, false, nil
	}
	return 0, false, spec.ErrInvalidParam.With("dir must be f or b")
}
