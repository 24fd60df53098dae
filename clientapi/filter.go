package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// routesFilter mounts the filter endpoints.
func (a *API) routesFilter(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Post("/user/{userId}/filter", h(a.postFilter))
	r.Get("/user/{userId}/filter/{filterId}", h(a.getFilter))
}

// postFilter is POST /_matrix/client/v3/user/{userId}/filter.
func (a *API) postFilter(r *http.Request) (any, error) {
	c, err := requireOwnUser(r, "Cannot create filters for other users")
	if err != nil {
		return nil, err
	}
	var body json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	id, err := a.accounts.CreateFilter(r.Context(), c.Localpart, body)
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": id}, nil
}

// getFilter is GET /_matrix/client/v3/user/{userId}/filter/{filterId}.
func (a *API) getFilter(r *http.Request) (any, error) {
	c, err := requireOwnUser(r, "Cannot read filters of other users")
	if err != nil {
		return nil, err
	}
	return a.accounts.Filter(r.Context(), c.Localpart, pathParam(r, "filterId"))
}
