package clientapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// routesRoomSummary mounts /room_summary (v1), which works with or without an access token.
func (a *API) routesRoomSummary(r chi.Router) {
	r.With(a.optionalAuth, a.rateLimited).Get("/room_summary/{roomIdOrAlias}", serve(a.log, a.roomSummary))
}

// optionalAuth authenticates the request when it carries an access token (a bad token is still
// an error) and lets it through anonymously when it carries none.
func (a *API) optionalAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := accessToken(r)
		if token == "" {
			next.ServeHTTP(w, r)
			return
		}
		caller, err := a.accounts.Authenticate(r.Context(), token)
		if err != nil {
			writeError(w, r, a.log, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyCaller, caller)))
	})
}

// roomSummary is GET /_matrix/client/v1/room_summary/{roomIdOrAlias}.
func (a *API) roomSummary(r *http.Request) (any, error) {
	target := pathParam(r, "roomIdOrAlias")
	if !strings.HasPrefix(target, "!") && !strings.HasPrefix(target, "#") || len(target) > 255 {
		return nil, spec.ErrInvalidParam.Withf("%q is neither a room ID nor an alias", target)
	}
	return a.rooms.Summary(r.Context(), string(callerOf(r).UserID), target)
}

// mutualRooms is GET /_matrix/client/v1/mutual_rooms.
func (a *API) mutualRooms(r *http.Request) (any, error) {
	other := r.URL.Query().Get("user_id")
	if other == "" {
		return nil, missing("user_id")
	}
	c := callerOf(r)
	if _, err := spec.ParseUserID(other); err != nil || other == string(c.UserID) {
		return nil, spec.ErrInvalidParam.With("user_id must be another valid user ID")
	}
	if r.URL.Query().Get("from") != "" {
		return nil, spec.ErrInvalidParam.With("Unknown from token") // every answer fits in one batch
	}
	rooms, err := a.rooms.MutualRooms(r.Context(), string(c.UserID), other)
	if err != nil {
		return nil, err
	}
	return map[string]any{"joined": rooms, "count": len(rooms)}, nil
}
