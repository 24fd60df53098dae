package federation

import (
	"encoding/json"
	"net/http"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// queryProfile is GET /_matrix/federation/v1/query/profile: the profile of one of our users, or
// one field of it.
func (a *API) queryProfile(w http.ResponseWriter, r *http.Request) {
	userID := r.URL.Query().Get("user_id")
	if userID == "" {
		write(w, http.StatusBadRequest, spec.ErrMissingParam.With("user_id is required"))
		return
	}
	u, err := spec.ParseUserID(userID)
	if err != nil {
		write(w, http.StatusBadRequest, spec.ErrInvalidParam.Withf("Invalid user ID: %v", err))
		return
	}
	if u.ServerName() != a.serverName {
		write(w, http.StatusBadRequest, spec.ErrInvalidParam.With("The user is not on this server"))
		return
	}
	if field := r.URL.Query().Get("field"); field != "" {
		v, err := a.accounts.ProfileField(r.Context(), userID, field)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		write(w, http.StatusOK, map[string]json.RawMessage{field: v})
		return
	}
	fields, err := a.accounts.Profile(r.Context(), userID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	write(w, http.StatusOK, fields)
}
