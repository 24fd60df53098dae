package clientapi

import "github.com/go-chi/chi/v5"

// routesOpenID mounts /user/{userId}/openid/request_token.
func (a *API) routesOpenID(r chi.Router) {}
