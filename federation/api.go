// Package federation serves the server-server API (/_matrix/federation/*, /_matrix/key/*). This
// first part answers what needs no request signing: the server version and OpenID userinfo.
package federation

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// API holds what the federation handlers need.
type API struct {
	accounts *account.Service
	version  string
}

// New builds the federation API.
func New(accounts *account.Service, version string) *API {
	return &API{accounts: accounts, version: version}
}

// Routes mounts the federation endpoints on r.
func (a *API) Routes(r chi.Router) {
	r.Get("/_matrix/federation/v1/version", a.serverVersion)
	r.Get("/_matrix/federation/v1/openid/userinfo", a.openIDUserInfo)
}

// serverVersion is GET /_matrix/federation/v1/version.
func (a *API) serverVersion(w http.ResponseWriter, _ *http.Request) {
	write(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "hearth", "version": a.version}})
}

// openIDUserInfo is GET /_matrix/federation/v1/openid/userinfo: exchanges an OpenID token from
// /openid/request_token for the user ID it was issued to.
func (a *API) openIDUserInfo(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		write(w, http.StatusUnauthorized, spec.ErrMissingToken.With("access_token is required"))
		return
	}
	user, err := a.accounts.OpenIDUser(r.Context(), token)
	if err != nil {
		write(w, http.StatusUnauthorized, spec.ErrUnknownToken.With("Unknown or expired OpenID token"))
		return
	}
	write(w, http.StatusOK, map[string]string{"sub": string(user)})
}

func write(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
