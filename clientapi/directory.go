package clientapi

import "github.com/go-chi/chi/v5"

// routesDirectory mounts the room directory, aliases, upgrades, forget and knock (v3).
func (a *API) routesDirectory(r chi.Router) {}

// routesDirectoryV1 mounts the v1 endpoints of the same area (/hierarchy, /timestamp_to_event).
func (a *API) routesDirectoryV1(r chi.Router) {}
