package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// queryLimit reads the limit query parameter: def when absent, capped at max.
func queryLimit(r *http.Request, def, max int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, spec.ErrInvalidParam.With("limit must be a non-negative integer")
	}
	return min(n, max), nil
}

// eventFilter reads the filter query parameter (a RoomEventFilter as JSON).
func eventFilter(r *http.Request) (*room.EventFilter, error) {
	raw := r.URL.Query().Get("filter")
	if raw == "" {
		return nil, nil
	}
	var f filter.RoomEventFilter
	if err := unmarshalObject([]byte(raw), &f); err != nil {
		return nil, err
	}
	return &room.EventFilter{Types: f.Types, NotTypes: f.NotTypes, Senders: f.Senders, NotSenders: f.NotSenders,
		LazyLoadMembers: f.LazyLoadMembers}, nil
}

// messages is GET /_matrix/client/v3/rooms/{roomId}/messages.
func (a *API) messages(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		return nil, errInvalidDir
	}
	limit, err := queryLimit(r, 10, 1000)
	if err != nil {
		return nil, err
	}
	f, err := eventFilter(r)
	if err != nil {
		return nil, err
	}
	page, err := a.rooms.Messages(r.Context(), a.reader(r), roomID, q.Get("from"), q.Get("to"), dir == "b", limit, f)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"start": page.Start, "chunk": nonNilEvents(page.Chunk)}
	if page.End != "" {
		resp["end"] = page.End
	}
	if len(page.State) > 0 {
		resp["state"] = page.State
	}
	return resp, nil
}

func nonNilEvents(evs []json.RawMessage) []json.RawMessage {
	if evs == nil {
		return []json.RawMessage{}
	}
	return evs
}

// eventContext is GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}.
func (a *API) eventContext(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	limit, err := queryLimit(r, 10, 1000)
	if err != nil {
		return nil, err
	}
	f, err := eventFilter(r)
	if err != nil {
		return nil, err
	}
	return a.rooms.Context(r.Context(), a.reader(r), roomID, pathParam(r, "eventId"), limit, f)
}

// getEvent is GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}.
func (a *API) getEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return a.rooms.Event(r.Context(), a.reader(r), roomID, pathParam(r, "eventId"))
}

// getState is GET /_matrix/client/v3/rooms/{roomId}/state.
func (a *API) getState(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	evs, err := a.rooms.State(r.Context(), a.reader(r), roomID)
	return nonNilEvents(evs), err
}

// getStateEvent is GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) getStateEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return a.rooms.StateEvent(r.Context(), a.reader(r), roomID, pathParam(r, "eventType"), wildcardParam(r),
		r.URL.Query().Get("format") == "event")
}

// members is GET /_matrix/client/v3/rooms/{roomId}/members.
func (a *API) members(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	evs, err := a.rooms.Members(r.Context(), a.reader(r), roomID, q.Get("at"), q.Get("membership"), q.Get("not_membership"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"chunk": nonNilEvents(evs)}, nil
}

// joinedMembers is GET /_matrix/client/v3/rooms/{roomId}/joined_members.
func (a *API) joinedMembers(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	m, err := a.rooms.JoinedMembers(r.Context(), a.reader(r), roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"joined": m}, nil
}

var (
	errInvalidDir     = spec.ErrInvalidParam.With("dir must be b or f")
	errInvalidInclude = spec.ErrInvalidParam.With("include must be all or participated")
)
