package clientapi

import "github.com/go-chi/chi/v5"

// routesAdmin mounts the Synapse-compatible admin API under /_synapse/admin/v1.
func (a *API) routesAdmin(r chi.Router) {}
