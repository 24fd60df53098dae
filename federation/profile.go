package federation

import (
	"encoding/json"
	"net/http"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// queryProfile is GET /_matrix/federation/v1/query/profile: the profile of one of our users, or
// one field of it; a field the user has not set is left out (200 {}), 404 is for unknown users.
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
	field := r.URL.Query().Get("field")
	if field != "" {
		if err := account.CheckProfileKey(field); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	fields, err := a.accounts.PublicProfile(r.Context(), userID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if field != "" {
		// Only that field, or nothing when it is not set (200 {}: the spec's "exclude it from the
		// response body"; a 404 means the user does not exist).
		one := map[string]json.RawMessage{}
		if v, ok := fields[field]; ok {
			one[field] = v
		}
		fields = one
	}
	write(w, http.StatusOK, fields)
}
