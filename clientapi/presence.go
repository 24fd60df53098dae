package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// routesPresence mounts the presence endpoints.
func (a *API) routesPresence(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Put("/presence/{userId}/status", h(a.putPresence))
	r.Get("/presence/{userId}/status", h(a.getPresence))
}

// putPresence is PUT /_matrix/client/v3/presence/{userId}/status.
func (a *API) putPresence(r *http.Request) (any, error) {
	c, err := requireOwnUser(r, "Cannot set the presence of other users")
	if err != nil {
		return nil, err
	}
	var body struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Presence == nil {
		return nil, missing("presence")
	}
	msg := ""
	if body.StatusMsg != nil {
		msg = *body.StatusMsg
	}
	return empty, a.syncer.Presence().Set(r.Context(), string(c.UserID), *body.Presence, msg)
}

// getPresence is GET /_matrix/client/v3/presence/{userId}/status.
func (a *API) getPresence(r *http.Request) (any, error) {
	userID := pathParam(r, "userId")
	if _, err := spec.ParseUserID(userID); err != nil {
		return nil, spec.ErrInvalidParam.Withf("Invalid user ID %q", userID)
	}
	return a.syncer.Presence().Get(r.Context(), string(callerOf(r).UserID), userID)
}
