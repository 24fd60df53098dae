package clientapi

import "github.com/go-chi/chi/v5"

// routesFilter mounts the filter endpoints.
func (a *API) routesFilter(r chi.Router) {}
