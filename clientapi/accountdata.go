package clientapi

import "github.com/go-chi/chi/v5"

// routesAccountData mounts the account data endpoints.
func (a *API) routesAccountData(r chi.Router) {}
