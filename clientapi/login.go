package clientapi

import (
	"net/http"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// loginFlows is GET /_matrix/client/v3/login.
func (a *API) loginFlows(_ *http.Request) (any, error) {
	return map[string]any{"flows": []map[string]any{{"type": "m.login.password"}}}, nil
}

type loginRequest struct {
	Type                     string              `json:"type"`
	Identifier               *account.Identifier `json:"identifier"`
	User                     string              `json:"user"` // deprecated
	Password                 string              `json:"password"`
	DeviceID                 string              `json:"device_id"`
	InitialDeviceDisplayName *string             `json:"initial_device_display_name"`
	RefreshToken             bool                `json:"refresh_token"`
}

// tokensResponse is the body of a successful login, registration or refresh.
type tokensResponse struct {
	UserID       string `json:"user_id,omitempty"`
	AccessToken  string `json:"access_token,omitempty"`
	DeviceID     string `json:"device_id,omitempty"`
	HomeServer   string `json:"home_server,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
}

func (a *API) tokensResponse(t account.Tokens) tokensResponse {
	return tokensResponse{UserID: string(t.UserID), AccessToken: t.AccessToken, DeviceID: t.DeviceID,
		HomeServer: a.cfg.ServerName, RefreshToken: t.RefreshToken, ExpiresInMS: t.ExpiresInMS}
}

// login is POST /_matrix/client/v3/login.
func (a *API) login(r *http.Request) (any, error) {
	var req loginRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Type == "" {
		return nil, missing("type")
	}
	if req.Type != account.StagePassword {
		return nil, spec.ErrUnknown.WithStatus(http.StatusBadRequest).Withf("Unsupported login type %q", req.Type)
	}
	user := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return nil, spec.ErrUnknown.WithStatus(http.StatusBadRequest).Withf("Unsupported identifier type %q", req.Identifier.Type)
		}
		user = req.Identifier.User
	}
	if user == "" {
		return nil, missing("identifier.user")
	}
	if req.Password == "" {
		return nil, missing("password")
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return nil, err
	}
	t, err := a.accounts.Login(r.Context(), account.LoginParams{User: user, Password: req.Password, DeviceID: req.DeviceID,
		DeviceName: req.InitialDeviceDisplayName, Refresh: req.RefreshToken, IP: a.clientIP(r)})
	if err != nil {
		return nil, err
	}
	return a.tokensResponse(t), nil
}

// checkDeviceID bounds client-chosen device IDs.
func checkDeviceID(id string) error {
	if len(id) > 255 {
		return spec.ErrInvalidParam.With("device_id may not be longer than 255 characters")
	}
	return nil
}

// refresh is POST /_matrix/client/v3/refresh.
func (a *API) refresh(r *http.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, missing("refresh_token")
	}
	t, err := a.accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	return map[string]any{"access_token": t.AccessToken, "refresh_token": t.RefreshToken, "expires_in_ms": t.ExpiresInMS}, nil
}

// whoami is GET /_matrix/client/v3/account/whoami.
func (a *API) whoami(r *http.Request) (any, error) {
	c := callerOf(r)
	return map[string]any{"user_id": c.UserID, "device_id": c.DeviceID, "is_guest": c.Guest}, nil
}

// logout is POST /_matrix/client/v3/logout.
func (a *API) logout(r *http.Request) (any, error) {
	return empty, a.accounts.Logout(r.Context(), callerOf(r))
}

// logoutAll is POST /_matrix/client/v3/logout/all.
func (a *API) logoutAll(r *http.Request) (any, error) {
	return empty, a.accounts.LogoutAll(r.Context(), callerOf(r))
}
