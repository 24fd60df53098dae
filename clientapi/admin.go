package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// routesAdmin mounts the Synapse-compatible admin API under /_synapse/admin/v1: the endpoints admin
// tools (synadm, register_new_matrix_user) and test suites (Complement) call.
func (a *API) routesAdmin(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }

	// Shared-secret registration authenticates with the MAC, not an access token. Like Synapse it is
	// not rate-limited: tools create many users in a row, and a wrong MAC only burns a nonce.
	r.Get("/register", h(a.sharedSecretNonce))
	r.Post("/register", h(a.sharedSecretRegister))

	r.Group(func(r chi.Router) {
		r.Use(a.requireAdmin)
		r.Get("/registration_tokens", h(a.listRegistrationTokens))
		r.Post("/registration_tokens/new", h(a.newRegistrationToken))
		r.Get("/registration_tokens/{token}", h(a.getRegistrationToken))
		r.Put("/registration_tokens/{token}", h(a.putRegistrationToken))
		r.Delete("/registration_tokens/{token}", h(a.deleteRegistrationToken))
		r.Get("/event_reports", h(a.listEventReports))
		r.Get("/event_reports/{id}", h(a.getEventReport))
		r.Delete("/event_reports/{id}", h(a.deleteEventReport))
	})
}

// requireAdmin is requireAuth for server admins only: M_MISSING_TOKEN / M_UNKNOWN_TOKEN without a
// valid token, M_FORBIDDEN for other users.
func (a *API) requireAdmin(next http.Handler) http.Handler {
	return a.requireAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !callerOf(r).Admin {
			writeJSON(w, http.StatusForbidden, spec.ErrForbidden.With("You are not a server admin"))
			return
		}
		next.ServeHTTP(w, r)
	}))
}

// sharedSecretNonce is GET /_synapse/admin/v1/register.
func (a *API) sharedSecretNonce(r *http.Request) (any, error) {
	nonce, err := a.accounts.NewRegistrationNonce(r.Context(), a.cfg.Registration.SharedSecret)
	if err != nil {
		return nil, err
	}
	return map[string]string{"nonce": nonce}, nil
}

type sharedSecretRequest struct {
	Nonce                    *string `json:"nonce"`
	Username                 *string `json:"username"`
	Password                 *string `json:"password"`
	DisplayName              *string `json:"displayname"`
	Admin                    bool    `json:"admin"`
	UserType                 *string `json:"user_type"`
	MAC                      *string `json:"mac"`
	DeviceID                 string  `json:"device_id"`
	InitialDeviceDisplayName *string `json:"initial_device_display_name"`
	InhibitLogin             bool    `json:"inhibit_login"`
	RefreshToken             bool    `json:"refresh_token"`
}

// sharedSecretRegister is POST /_synapse/admin/v1/register.
func (a *API) sharedSecretRegister(r *http.Request) (any, error) {
	secret := a.cfg.Registration.SharedSecret
	if secret == "" {
		return nil, account.ErrSharedSecretDisabled // before reading the body, as Synapse does
	}
	var req sharedSecretRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return nil, err
	}
	userType := ""
	if req.UserType != nil {
		userType = *req.UserType
	}
	t, err := a.accounts.RegisterWithSharedSecret(r.Context(), secret, account.SharedSecretRequest{
		Nonce: req.Nonce, Username: req.Username, Password: req.Password, DisplayName: req.DisplayName,
		Admin: req.Admin, UserType: userType, MAC: req.MAC, DeviceID: req.DeviceID,
		DeviceName: req.InitialDeviceDisplayName, InhibitLogin: req.InhibitLogin, Refresh: req.RefreshToken,
		IP: a.clientIP(r),
	})
	if err != nil {
		return nil, err
	}
	return a.tokensResponse(t), nil
}

// listRegistrationTokens is GET /_synapse/admin/v1/registration_tokens[?valid=true|false].
func (a *API) listRegistrationTokens(r *http.Request) (any, error) {
	var valid *bool
	if v, ok := r.URL.Query()["valid"]; ok {
		switch v[0] {
		case "true":
			valid = new(bool)
			*valid = true
		case "false":
			valid = new(bool)
		default:
			return nil, spec.ErrInvalidParam.With("Boolean query parameter 'valid' must be one of ['true', 'false']")
		}
	}
	tokens, err := a.accounts.RegistrationTokens(r.Context(), valid)
	if err != nil {
		return nil, err
	}
	return map[string]any{"registration_tokens": tokens}, nil
}

// getRegistrationToken is GET /_synapse/admin/v1/registration_tokens/{token}.
func (a *API) getRegistrationToken(r *http.Request) (any, error) {
	return a.accounts.RegistrationToken(r.Context(), chi.URLParam(r, "token"))
}

// newRegistrationToken is POST /_synapse/admin/v1/registration_tokens/new.
func (a *API) newRegistrationToken(r *http.Request) (any, error) {
	body, err := decodeObject(r)
	if err != nil {
		return nil, err
	}
	n := account.NewRegistrationToken{Length: 16}
	if raw, ok := body["token"]; ok {
		var tok string
		if err := json.Unmarshal(raw, &tok); err != nil || isNull(raw) {
			return nil, spec.ErrInvalidParam.With("token must be a string")
		}
		n.Token = &tok
	} else if raw, ok := body["length"]; ok {
		if n.Length, ok = jsonInt(raw); !ok {
			return nil, spec.ErrInvalidParam.With("length must be an integer")
		}
	}
	if _, n.UsesAllowed, err = optionalInt(body, "uses_allowed", "uses_allowed must be a non-negative integer or null"); err != nil {
		return nil, err
	}
	if _, n.ExpiryTS, err = optionalInt(body, "expiry_time", "expiry_time must be an integer or null"); err != nil {
		return nil, err
	}
	return a.accounts.CreateRegistrationToken(r.Context(), n)
}

// putRegistrationToken is PUT /_synapse/admin/v1/registration_tokens/{token}.
func (a *API) putRegistrationToken(r *http.Request) (any, error) {
	body, err := decodeObject(r)
	if err != nil {
		return nil, err
	}
	var u account.RegistrationTokenUpdate
	if u.SetUsesAllowed, u.UsesAllowed, err = optionalInt(body, "uses_allowed", "uses_allowed must be a non-negative integer or null"); err != nil {
		return nil, err
	}
	if u.SetExpiryTS, u.ExpiryTS, err = optionalInt(body, "expiry_time", "expiry_time must be an integer or null"); err != nil {
		return nil, err
	}
	return a.accounts.UpdateRegistrationToken(r.Context(), chi.URLParam(r, "token"), u)
}

// deleteRegistrationToken is DELETE /_synapse/admin/v1/registration_tokens/{token}.
func (a *API) deleteRegistrationToken(r *http.Request) (any, error) {
	if err := a.accounts.DeleteRegistrationToken(r.Context(), chi.URLParam(r, "token")); err != nil {
		return nil, err
	}
	return empty, nil
}

// decodeObject reads a JSON object body (an empty body is {}) keeping each field raw, for endpoints
// that tell an absent field from null and answer wrong types with M_INVALID_PARAM, as Synapse's
// admin API does.
func decodeObject(r *http.Request) (map[string]json.RawMessage, error) {
	body := map[string]json.RawMessage{}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	return body, nil
}

// optionalInt reads an integer-or-null field: set reports whether the field is present, v is nil
// for null. Anything else (a string, a boolean, a fraction) is M_INVALID_PARAM with msg.
func optionalInt(body map[string]json.RawMessage, key, msg string) (set bool, v *int64, err error) {
	raw, ok := body[key]
	if !ok {
		return false, nil, nil
	}
	if isNull(raw) {
		return true, nil, nil
	}
	n, ok := jsonInt(raw)
	if !ok {
		return true, nil, spec.ErrInvalidParam.With(msg)
	}
	return true, &n, nil
}

// jsonInt parses a JSON integer literal (not 1.0 or 1e3, as Python's json does not make those ints).
func jsonInt(raw json.RawMessage) (int64, bool) {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	return n, err == nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// whois is GET /_matrix/client/v3/admin/whois/{userId}: a local user's devices with where and when
// each was last seen, for server admins and for the user themselves. One session per device, as a
// device holds one access token; user agents are not kept.
func (a *API) whois(r *http.Request) (any, error) {
	caller := callerOf(r)
	target := pathParam(r, "userId")
	if !caller.Admin && target != string(caller.UserID) {
		return nil, spec.ErrForbidden.With("Only server admins may look up other users")
	}
	u, err := spec.ParseUserID(target)
	if err != nil || u.ServerName() != a.cfg.ServerName {
		return nil, spec.ErrNotFound.With("Not a user of this server")
	}
	if ok, err := a.accounts.Exists(r.Context(), u.Localpart()); err != nil {
		return nil, err
	} else if !ok {
		return nil, spec.ErrNotFound.With("Unknown user")
	}
	devices, err := a.accounts.Devices(r.Context(), u.Localpart())
	if err != nil {
		return nil, err
	}
	type connection struct {
		IP       string `json:"ip,omitempty"`
		LastSeen int64  `json:"last_seen,omitempty"`
	}
	type session struct {
		Connections []connection `json:"connections"`
	}
	type device struct {
		Sessions []session `json:"sessions"`
	}
	out := struct {
		UserID  string            `json:"user_id"`
		Devices map[string]device `json:"devices"`
	}{UserID: target, Devices: make(map[string]device, len(devices))}
	for _, d := range devices {
		out.Devices[d.DeviceID] = device{Sessions: []session{{Connections: []connection{{IP: d.LastSeenIP, LastSeen: d.LastSeenTS}}}}}
	}
	return out, nil
}
