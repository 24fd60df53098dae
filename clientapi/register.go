package clientapi

import (
	"net/http"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

type registerRequest struct {
	Auth                     *account.AuthDict `json:"auth"`
	Username                 string            `json:"username"`
	Password                 string            `json:"password"`
	DeviceID                 string            `json:"device_id"`
	InitialDeviceDisplayName *string           `json:"initial_device_display_name"`
	InhibitLogin             bool              `json:"inhibit_login"`
	RefreshToken             bool              `json:"refresh_token"`
}

// registrationFlows are the UIA flows /register offers under the configuration.
func (a *API) registrationFlows() []account.Flow {
	if a.cfg.Registration.RequireToken {
		return []account.Flow{{Stages: []string{account.StageRegistrationToken}}}
	}
	return []account.Flow{{Stages: []string{account.StageDummy}}}
}

func (a *API) registrationAllowed() bool {
	return a.cfg.RegistrationOpen() || a.cfg.Registration.RequireToken
}

// register is POST /_matrix/client/v3/register.
func (a *API) register(r *http.Request) (any, error) {
	kind := r.URL.Query().Get("kind")
	if kind == "" {
		kind = "user"
	}
	var req registerRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	switch kind {
	case "user":
		if !a.registrationAllowed() {
			return nil, spec.ErrForbidden.With("Registration is disabled on this server")
		}
	case "guest":
		if !a.cfg.Registration.AllowGuests {
			return nil, spec.ErrGuestAccessForbidden.With("Guest registration is disabled on this server")
		}
	default:
		return nil, spec.ErrInvalidParam.Withf("Unknown kind %q", kind)
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return nil, err
	}
	ctx := r.Context()
	params := account.RegisterParams{DeviceID: req.DeviceID, DeviceName: req.InitialDeviceDisplayName,
		InhibitLogin: req.InhibitLogin, Refresh: req.RefreshToken, IP: a.clientIP(r), Guest: kind == "guest"}
	if kind == "user" {
		// Check what can be checked before asking the client to authenticate, so it fails early.
		params.Localpart = strings.ToLower(req.Username)
		if req.Username != "" {
			if err := a.accounts.CheckUsername(ctx, params.Localpart); err != nil {
				return nil, err
			}
		}
		if req.Password == "" && req.Auth != nil {
			return nil, missing("password")
		}
		if req.Password != "" {
			if err := a.accounts.CheckPasswordStrength(req.Password); err != nil {
				return nil, err
			}
		}
		params.Password = req.Password
		sess, err := a.accounts.Authorize(ctx, account.UIARequest{Action: "register", Flows: a.registrationFlows(), Auth: req.Auth})
		if err != nil {
			return nil, err
		}
		params.RegistrationToken, params.UIASession = sess.RegistrationToken, sess.ID
	}
	t, err := a.accounts.Register(ctx, params)
	if err != nil {
		return nil, err
	}
	return a.tokensResponse(t), nil
}

// registerAvailable is GET /_matrix/client/v3/register/available.
func (a *API) registerAvailable(r *http.Request) (any, error) {
	username := r.URL.Query().Get("username")
	if username == "" {
		return nil, missing("username")
	}
	if err := a.accounts.CheckUsername(r.Context(), strings.ToLower(username)); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

// registrationTokenValidity is GET /_matrix/client/v1/register/m.login.registration_token/validity.
func (a *API) registrationTokenValidity(r *http.Request) (any, error) {
	if !a.registrationAllowed() {
		return nil, spec.ErrForbidden.With("Registration is disabled on this server")
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		return nil, missing("token")
	}
	valid, err := a.accounts.ValidRegistrationToken(r.Context(), token)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"valid": valid}, nil
}
