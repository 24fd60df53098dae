package federation

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// getHierarchy is GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=: one space-room
// and its children, for the asking server to walk (room.Service.HierarchyForServer).
func (a *API) getHierarchy(r *http.Request) (any, error) {
	suggested, err := boolParam(r, "suggested_only")
	if err != nil {
		return nil, err
	}
	return a.rooms.HierarchyForServer(r.Context(), Origin(r.Context()), chi.URLParam(r, "roomId"), suggested)
}

// boolParam reads an optional true/false query parameter (false when absent).
func boolParam(r *http.Request, name string) (bool, error) {
	switch r.URL.Query().Get(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, spec.ErrInvalidParam.Withf("%s must be true or false", name)
}
