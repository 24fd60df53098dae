package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// routesRelations mounts /relations and /threads (v1).
func (a *API) routesRelations(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Get("/rooms/{roomId}/relations/{eventId}", h(a.relations))
	r.Get("/rooms/{roomId}/relations/{eventId}/{relType}", h(a.relations))
	r.Get("/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", h(a.relations))
	r.Get("/rooms/{roomId}/threads", h(a.threads))
}

// relations is GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (a *API) relations(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		return nil, errInvalidDir
	}
	limit, err := queryLimit(r, 50, 1000)
	if err != nil {
		return nil, err
	}
	page, err := a.rooms.Relations(r.Context(), a.reader(r), roomID, pathParam(r, "eventId"), pathParam(r, "relType"),
		pathParam(r, "eventType"), q.Get("from"), dir == "b", limit)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"chunk": nonNilEvents(page.Chunk)}
	if page.NextBatch != "" {
		resp["next_batch"] = page.NextBatch
	}
	if page.PrevBatch != "" {
		resp["prev_batch"] = page.PrevBatch
	}
	return resp, nil
}

// threads is GET /_matrix/client/v1/rooms/{roomId}/threads.
func (a *API) threads(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	include := q.Get("include")
	if include != "" && include != "all" && include != "participated" {
		return nil, errInvalidInclude
	}
	limit, err := queryLimit(r, 50, 1000)
	if err != nil {
		return nil, err
	}
	page, err := a.rooms.Threads(r.Context(), a.reader(r), roomID, include == "participated", q.Get("from"), limit)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"chunk": nonNilEvents(page.Chunk)}
	if page.NextBatch != "" {
		resp["next_batch"] = page.NextBatch
	}
	return resp, nil
}
