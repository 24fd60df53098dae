package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// routesProfilePublic mounts the unauthenticated profile endpoints. The spec asks no access token to
// read profiles.
func (a *API) routesProfilePublic(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Get("/profile/{userId}", h(a.getProfile))
	r.Get("/profile/{userId}/{keyName}", h(a.getProfileField))
}

// routesProfile mounts the authenticated profile endpoints.
func (a *API) routesProfile(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.With(a.rateLimited).Put("/profile/{userId}/{keyName}", h(a.putProfileField))
	r.With(a.rateLimited).Delete("/profile/{userId}/{keyName}", h(a.deleteProfileField))
}

// getProfile is GET /_matrix/client/v3/profile/{userId}.
func (a *API) getProfile(r *http.Request) (any, error) {
	userID := pathParam(r, "userId")
	if a.isRemoteUser(userID) {
		return a.directory.RemoteProfile(r.Context(), userID, "")
	}
	return a.accounts.Profile(r.Context(), userID)
}

// isRemoteUser reports whether userID is a valid user ID of another server whose profile can be
// asked over federation.
func (a *API) isRemoteUser(userID string) bool {
	u, err := spec.ParseUserID(userID)
	return err == nil && a.directory != nil && u.ServerName() != a.cfg.ServerName
}

// getProfileField is GET /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) getProfileField(r *http.Request) (any, error) {
	key := pathParam(r, "keyName")
	if userID := pathParam(r, "userId"); a.isRemoteUser(userID) {
		if err := account.CheckProfileKey(key); err != nil {
			return nil, err
		}
		return a.directory.RemoteProfile(r.Context(), userID, key)
	}
	v, err := a.accounts.ProfileField(r.Context(), pathParam(r, "userId"), key)
	if err != nil {
		return nil, err
	}
	return map[string]json.RawMessage{key: v}, nil
}

// putProfileField is PUT /_matrix/client/v3/profile/{userId}/{keyName}: the body is {keyName: value}.
func (a *API) putProfileField(r *http.Request) (any, error) {
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	key := pathParam(r, "keyName")
	if err := a.accounts.SetProfileField(r.Context(), callerOf(r), pathParam(r, "userId"), key, body[key]); err != nil {
		return nil, err
	}
	return empty, a.propagateProfile(r, key)
}

// propagateProfile updates the caller's member events after a displayname or avatar change.
func (a *API) propagateProfile(r *http.Request, key string) error {
	if key != "displayname" && key != "avatar_url" {
		return nil
	}
	c := callerOf(r)
	return a.rooms.UpdateProfile(r.Context(), a.sender(r, ""), a.memberProfile(r, string(c.UserID)))
}

// deleteProfileField is DELETE /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) deleteProfileField(r *http.Request) (any, error) {
	key := pathParam(r, "keyName")
	if err := a.accounts.DeleteProfileField(r.Context(), callerOf(r), pathParam(r, "userId"), key); err != nil {
		return nil, err
	}
	return empty, a.propagateProfile(r, key)
}
