package clientapi

import "github.com/go-chi/chi/v5"

// routesProfilePublic mounts the unauthenticated profile endpoints.
func (a *API) routesProfilePublic(r chi.Router) {}

// routesProfile mounts the authenticated profile endpoints.
func (a *API) routesProfile(r chi.Router) {}
