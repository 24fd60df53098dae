package clientapi

import (
	"net/http"

	"github.com/hearthmx/homeserver/homeserver/account"
)

// changePassword is POST /_matrix/client/v3/account/password (user-interactive auth).
func (a *API) changePassword(r *http.Request) (any, error) {
	var req struct {
		NewPassword   string            `json:"new_password"`
		LogoutDevices *bool             `json:"logout_devices"`
		Auth          *account.AuthDict `json:"auth"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewPassword == "" {
		return nil, missing("new_password")
	}
	if err := a.accounts.CheckPasswordStrength(req.NewPassword); err != nil {
		return nil, err
	}
	c := callerOf(r)
	sess, err := a.accounts.Authorize(r.Context(), account.UIARequest{Action: "change_password", Localpart: c.Localpart,
		Flows: passwordFlows, Auth: req.Auth})
	if err != nil {
		return nil, err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := a.accounts.ChangePassword(r.Context(), c.Localpart, req.NewPassword, logout, c.DeviceID); err != nil {
		return nil, err
	}
	return empty, a.accounts.FinishUIA(r.Context(), sess.ID)
}

// deactivate is POST /_matrix/client/v3/account/deactivate (user-interactive auth).
func (a *API) deactivate(r *http.Request) (any, error) {
	var req struct {
		Auth  *account.AuthDict `json:"auth"`
		Erase bool              `json:"erase"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	c := callerOf(r)
	sess, err := a.accounts.Authorize(r.Context(), account.UIARequest{Action: "deactivate", Localpart: c.Localpart,
		Flows: passwordFlows, Auth: req.Auth})
	if err != nil {
		return nil, err
	}
	if err := a.accounts.Deactivate(r.Context(), c.Localpart, req.Erase); err != nil {
		return nil, err
	}
	if err := a.accounts.FinishUIA(r.Context(), sess.ID); err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": "no-support"}, nil
}

// threepids is GET /_matrix/client/v3/account/3pid. This server does not bind third-party
// identifiers to accounts, so the list is always empty.
func (a *API) threepids(_ *http.Request) (any, error) {
	return map[string]any{"threepids": []any{}}, nil
}
