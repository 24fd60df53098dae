package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// routesAccountData mounts the account data endpoints.
func (a *API) routesAccountData(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Get("/user/{userId}/account_data/{type}", h(a.getAccountData(false)))
	r.Put("/user/{userId}/account_data/{type}", h(a.putAccountData(false)))
	r.Get("/user/{userId}/rooms/{roomId}/account_data/{type}", h(a.getAccountData(true)))
	r.Put("/user/{userId}/rooms/{roomId}/account_data/{type}", h(a.putAccountData(true)))
	r.Get("/user/{userId}/rooms/{roomId}/tags", h(a.getTags))
	r.Put("/user/{userId}/rooms/{roomId}/tags/{tag}", h(a.putTag))
	r.Delete("/user/{userId}/rooms/{roomId}/tags/{tag}", h(a.deleteTag))
}

// getTags is GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags.
func (a *API) getTags(r *http.Request) (any, error) {
	c, err := requireOwnUser(r, "Cannot read tags of other users")
	if err != nil {
		return nil, err
	}
	return a.accounts.RoomTags(r.Context(), c.Localpart, pathParam(r, "roomId"))
}

// putTag is PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}.
func (a *API) putTag(r *http.Request) (any, error) {
	c, err := requireOwnUser(r, "Cannot add tags for other users")
	if err != nil {
		return nil, err
	}
	var body json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	return empty, a.accounts.SetRoomTag(r.Context(), c.Localpart, pathParam(r, "roomId"), pathParam(r, "tag"), body)
}

// deleteTag is DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}.
func (a *API) deleteTag(r *http.Request) (any, error) {
	c, err := requireOwnUser(r, "Cannot remove tags of other users")
	if err != nil {
		return nil, err
	}
	return empty, a.accounts.DeleteRoomTag(r.Context(), c.Localpart, pathParam(r, "roomId"), pathParam(r, "tag"))
}

// getAccountData is GET /_matrix/client/v3/user/{userId}/account_data/{type} and, perRoom,
// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}.
func (a *API) getAccountData(perRoom bool) handler {
	return func(r *http.Request) (any, error) {
		c, err := requireOwnUser(r, "Cannot read account data of other users")
		if err != nil {
			return nil, err
		}
		roomID, err := accountDataRoom(r, perRoom)
		if err != nil {
			return nil, err
		}
		return a.accounts.AccountData(r.Context(), c.Localpart, roomID, pathParam(r, "type"))
	}
}

// putAccountData is PUT /_matrix/client/v3/user/{userId}/account_data/{type} and, perRoom,
// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}.
func (a *API) putAccountData(perRoom bool) handler {
	return func(r *http.Request) (any, error) {
		c, err := requireOwnUser(r, "Cannot add account data for other users")
		if err != nil {
			return nil, err
		}
		roomID, err := accountDataRoom(r, perRoom)
		if err != nil {
			return nil, err
		}
		var content json.RawMessage
		if err := decodeJSON(r, &content); err != nil {
			return nil, err
		}
		return empty, a.accounts.SetAccountData(r.Context(), c.Localpart, roomID, pathParam(r, "type"), content)
	}
}

// accountDataRoom is the {roomId} of a per-room route, "" (global) otherwise.
func accountDataRoom(r *http.Request, perRoom bool) (string, error) {
	if !perRoom {
		return "", nil
	}
	roomID := pathParam(r, "roomId")
	if roomID == "" {
		return "", spec.ErrInvalidParam.With("The room ID is empty")
	}
	return roomID, nil
}

// unescapedParam is a path parameter, percent-decoded. chi matches on the escaped path when a
// request has escapes (clients send user IDs as %40alice%3Aexample.org), and then hands out the
// parameters still escaped.

// requireOwnUser checks that the {userId} of the path is the caller, for the endpoints that only
// act on the caller's own user: M_FORBIDDEN with msg otherwise.
func requireOwnUser(r *http.Request, msg string) (account.Caller, error) {
	c := callerOf(r)
	if pathParam(r, "userId") != string(c.UserID) {
		return c, spec.ErrForbidden.With(msg)
	}
	return c, nil
}
