package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// routesOpenID mounts /user/{userId}/openid/request_token.
func (a *API) routesOpenID(r chi.Router) {
	r.With(a.rateLimited).Post("/user/{userId}/openid/request_token", serve(a.log, a.requestOpenIDToken))
}

// requestOpenIDToken is POST /_matrix/client/v3/user/{userId}/openid/request_token: a token the user
// hands to a third party, which exchanges it for the user ID at
// GET /_matrix/federation/v1/openid/userinfo. It is no access token for this API.
func (a *API) requestOpenIDToken(r *http.Request) (any, error) {
	c, err := requireOwnUser(r, "Cannot request OpenID tokens for other users")
	if err != nil {
		return nil, err
	}
	var req struct{} // "an empty object, reserved for future expansion"
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	tok, err := a.accounts.RequestOpenIDToken(r.Context(), c.Localpart)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token":       tok.AccessToken,
		"token_type":         "Bearer",
		"matrix_server_name": a.cfg.ServerName,
		"expires_in":         tok.ExpiresInS,
	}, nil
}
