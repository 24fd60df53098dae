package federation

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Reads of events and state by other servers ("Retrieving events", "Backfilling and retrieving
// missing events", "Retrieving event authorisation information"). The room service applies the
// history visibility rules for servers.

// getEvent is GET /_matrix/federation/v1/event/{eventId}: a transaction with the one event.
func (a *API) getEvent(r *http.Request) (any, error) {
	pdu, err := a.rooms.EventForServer(r.Context(), Origin(r.Context()), chi.URLParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	if err := a.checkEventACL(r.Context(), pdu); err != nil {
		return nil, err
	}
	return map[string]any{"origin": a.serverName, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{pdu}}, nil
}

// stateAt reads the state before ?event_id= for the state endpoints.
func (a *API) stateAt(r *http.Request) (state, authChain []storage.Event, err error) {
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, nil, spec.ErrMissingParam.With("event_id is required")
	}
	return a.rooms.StateAt(r.Context(), Origin(r.Context()), chi.URLParam(r, "roomId"), eventID)
}

// getStateIDs is GET /_matrix/federation/v1/state_ids/{roomId}?event_id=: the IDs of the state
// before the event and of its auth chain.
func (a *API) getStateIDs(r *http.Request) (any, error) {
	state, chain, err := a.stateAt(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)}, nil
}

// getState is GET /_matrix/federation/v1/state/{roomId}?event_id=: the same as full events.
func (a *API) getState(r *http.Request) (any, error) {
	state, chain, err := a.stateAt(r)
	if err != nil {
		return nil, err
	}
	pdus, auth, err := a.stateJSON(r, state, chain)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdus": pdus, "auth_chain": auth}, nil
}

// stateJSON is the federation form of a state and its auth chain.
func (a *API) stateJSON(r *http.Request, state, chain []storage.Event) (pdus, auth []json.RawMessage, err error) {
	if pdus, err = a.federationJSON(r, state); err != nil {
		return nil, nil, err
	}
	if auth, err = a.federationJSON(r, chain); err != nil {
		return nil, nil, err
	}
	return pdus, auth, nil
}

// getEventAuth is GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}: the event's auth chain.
func (a *API) getEventAuth(r *http.Request) (any, error) {
	chain, err := a.rooms.AuthChainOf(r.Context(), Origin(r.Context()), chi.URLParam(r, "roomId"), chi.URLParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	auth, err := a.federationJSON(r, chain)
	if err != nil {
		return nil, err
	}
	return map[string]any{"auth_chain": auth}, nil
}

// getMissingEvents is POST /_matrix/federation/v1/get_missing_events/{roomId}.
func (a *API) getMissingEvents(r *http.Request) (any, error) {
	var req struct {
		EarliestEvents []string `json:"earliest_events"`
		LatestEvents   []string `json:"latest_events"`
		Limit          *int     `json:"limit"`
		MinDepth       int64    `json:"min_depth"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return nil, spec.ErrBadJSON.With("Expected {earliest_events, latest_events, limit, min_depth}")
	}
	if req.LatestEvents == nil || req.EarliestEvents == nil {
		return nil, spec.ErrMissingParam.With("earliest_events and latest_events are required")
	}
	limit := 10
	if req.Limit != nil {
		limit = min(max(*req.Limit, 0), 100)
	}
	if len(req.LatestEvents) > 20 || len(req.EarliestEvents) > 100 {
		return nil, spec.ErrInvalidParam.With("Too many earliest_events or latest_events")
	}
	evs, err := a.rooms.MissingEvents(r.Context(), Origin(r.Context()), chi.URLParam(r, "roomId"), req.EarliestEvents, req.LatestEvents, limit, req.MinDepth)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": evs}, nil
}

func eventIDs(evs []storage.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.EventID
	}
	return out
}

// federationJSON is the federation form of stored events (signed where they are ours).
func (a *API) federationJSON(r *http.Request, evs []storage.Event) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(evs))
	c := a.store.Read()
	for _, e := range evs {
		raw, err := a.rooms.FederationJSON(r.Context(), c, e)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}
