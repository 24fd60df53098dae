package clientapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// routesTyping mounts the typing endpoint.
func (a *API) routesTyping(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Put("/rooms/{roomId}/typing/{userId}", h(a.putTyping))
}

// putTyping is PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}.
func (a *API) putTyping(r *http.Request) (any, error) {
	c, err := requireOwnUser(r, "Cannot set the typing state of other users")
	if err != nil {
		return nil, err
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Typing  *bool `json:"typing"`
		Timeout int64 `json:"timeout"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, missing("typing")
	}
	timeout := time.Duration(max(body.Timeout, 0)) * time.Millisecond
	return empty, a.syncer.Typing().Set(r.Context(), roomID, string(c.UserID), *body.Typing, timeout)
}
