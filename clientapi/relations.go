package clientapi

import "github.com/go-chi/chi/v5"

// routesRelations mounts /relations and /threads (v1).
func (a *API) routesRelations(r chi.Router) {}
