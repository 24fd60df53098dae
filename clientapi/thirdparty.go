package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Third-party networks (module "Third-party Networks") are reached through bridges, which are
// application services; this server has none, so it knows no protocol. The answers say so: no
// protocols, no portal rooms and no users for any protocol, empty reverse lookups. (Element asks
// for the protocols when it opens its room directory and shows an error when the request fails.)

// routesThirdParty mounts the third-party lookup endpoints.
func (a *API) routesThirdParty(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Get("/thirdparty/protocols", h(func(*http.Request) (any, error) { return empty, nil }))
	unknown := func(*http.Request) (any, error) { return nil, spec.ErrNotFound.With("Unknown protocol") }
	r.Get("/thirdparty/protocol/{protocol}", h(unknown))
	r.Get("/thirdparty/location/{protocol}", h(unknown))
	r.Get("/thirdparty/user/{protocol}", h(unknown))
	r.Get("/thirdparty/location", h(reverseLookup("alias")))
	r.Get("/thirdparty/user", h(reverseLookup("userid")))
}

// reverseLookup answers a reverse lookup (by Matrix room alias or user ID): nothing, since no
// bridge knows the third-party side.
func reverseLookup(param string) handler {
	return func(r *http.Request) (any, error) {
		if r.URL.Query().Get(param) == "" {
			return nil, spec.ErrMissingParam.Withf("The %s query parameter is required", param)
		}
		return []any{}, nil
	}
}
