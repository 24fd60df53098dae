package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// SetE2EE gives the API the key-management service (the /keys endpoints answer M_UNRECOGNIZED
// without one).
func (a *API) SetE2EE(s *e2ee.Service) { a.e2ee = s }

// routesKeys mounts the key-management endpoints of end-to-end encryption.
func (a *API) routesKeys(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Post("/keys/upload", h(a.withE2EE(a.uploadKeys)))
	r.Post("/keys/query", h(a.withE2EE(a.queryKeys)))
	r.Post("/keys/claim", h(a.withE2EE(a.claimKeys)))
	r.Get("/keys/changes", h(a.withE2EE(a.keyChanges)))
	r.Post("/keys/device_signing/upload", h(a.withE2EE(a.uploadSigningKeys)))
	r.Post("/keys/signatures/upload", h(a.withE2EE(a.uploadSignatures)))
}

func (a *API) withE2EE(fn handler) handler {
	return func(r *http.Request) (any, error) {
		if a.e2ee == nil {
			return nil, spec.ErrUnrecognized
		}
		return fn(r)
	}
}

// uploadKeys is POST /_matrix/client/v3/keys/upload.
func (a *API) uploadKeys(r *http.Request) (any, error) {
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	c := callerOf(r)
	counts, err := a.e2ee.UploadKeys(r.Context(), string(c.UserID), c.DeviceID, e2ee.UploadRequest{
		DeviceKeys: req.DeviceKeys, OneTimeKeys: req.OneTimeKeys, FallbackKeys: req.FallbackKeys})
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// queryKeys is POST /_matrix/client/v3/keys/query.
func (a *API) queryKeys(r *http.Request) (any, error) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    int64               `json:"timeout"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.DeviceKeys == nil {
		return nil, missing("device_keys")
	}
	return a.e2ee.QueryKeys(r.Context(), string(callerOf(r).UserID), req.DeviceKeys, time.Duration(max(req.Timeout, 0))*time.Millisecond)
}

// claimKeys is POST /_matrix/client/v3/keys/claim.
func (a *API) claimKeys(r *http.Request) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     int64                        `json:"timeout"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.OneTimeKeys == nil {
		return nil, missing("one_time_keys")
	}
	return a.e2ee.ClaimKeys(r.Context(), req.OneTimeKeys, time.Duration(max(req.Timeout, 0))*time.Millisecond)
}

// keyChanges is GET /_matrix/client/v3/keys/changes?from=<sync token>&to=<sync token>. Without to
// (or a to without a device-list part) the range ends at the current positions.
func (a *API) keyChanges(r *http.Request) (any, error) {
	q := r.URL.Query()
	if q.Get("from") == "" {
		return nil, missing("from")
	}
	fromEvents, err := eventsPos(q.Get("from"))
	if err != nil {
		return nil, err
	}
	fromDL, err := deviceListsPos(q.Get("from"))
	if err != nil {
		return nil, err
	}
	to, err := a.e2ee.CurrentPositions(r.Context())
	if err != nil {
		return nil, err
	}
	if t := q.Get("to"); t != "" {
		if to.Events, err = eventsPos(t); err != nil {
			return nil, err
		}
		dl, err := deviceListsPos(t)
		if err != nil {
			return nil, err
		}
		if dl > 0 {
			to.DeviceLists = dl
		}
	}
	changed, left, err := a.e2ee.KeyChanges(r.Context(), string(callerOf(r).UserID),
		e2ee.Positions{Events: fromEvents, DeviceLists: fromDL}, to)
	if err != nil {
		return nil, err
	}
	if changed == nil {
		changed = []string{}
	}
	if left == nil {
		left = []string{}
	}
	return map[string]any{"changed": changed, "left": left}, nil
}

// syncTokenParts reads the positions of a sync token "s<p1>_<p2>_..." (M_INVALID_PARAM otherwise).
func syncTokenParts(token string) ([]int64, error) {
	bad := spec.ErrInvalidParam.With("Invalid sync token")
	if len(token) < 2 || token[0] != 's' || len(token) > 200 {
		return nil, bad
	}
	var out []int64
	for _, p := range strings.Split(token[1:], "_") {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return nil, bad
		}
		out = append(out, n)
	}
	return out, nil
}

// eventsPos is the events-stream position of a sync token (its first part).
func eventsPos(token string) (int64, error) {
	parts, err := syncTokenParts(token)
	if err != nil {
		return 0, err
	}
	return parts[0], nil
}

// deviceListsPos is the device_lists position of a sync token: its seventh part, as in
// "s1_2_3_4_5_6_7"; a token without one reads as 0.
func deviceListsPos(token string) (int64, error) {
	parts, err := syncTokenParts(token)
	if err != nil {
		return 0, err
	}
	if len(parts) < 7 {
		return 0, nil
	}
	return parts[6], nil
}

// uploadSigningKeys is POST /_matrix/client/v3/keys/device_signing/upload. User-interactive auth
// (password) is asked only when the upload would replace existing keys.
func (a *API) uploadSigningKeys(r *http.Request) (any, error) {
	var req struct {
		MasterKey      json.RawMessage   `json:"master_key"`
		SelfSigningKey json.RawMessage   `json:"self_signing_key"`
		UserSigningKey json.RawMessage   `json:"user_signing_key"`
		Auth           *account.AuthDict `json:"auth"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	c := callerOf(r)
	keys := e2ee.SigningKeys{Master: req.MasterKey, SelfSigning: req.SelfSigningKey, UserSigning: req.UserSigningKey}
	err := a.e2ee.UploadDeviceSigningKeys(r.Context(), string(c.UserID), keys, false)
	if !errors.Is(err, e2ee.ErrAuthRequired) {
		if err != nil {
			return nil, err
		}
		return empty, nil
	}
	sess, err := a.accounts.Authorize(r.Context(), account.UIARequest{Action: "device_signing_upload", Localpart: c.Localpart,
		Flows: passwordFlows, Auth: req.Auth})
	if err != nil {
		return nil, err
	}
	if err := a.e2ee.UploadDeviceSigningKeys(r.Context(), string(c.UserID), keys, true); err != nil {
		return nil, err
	}
	return empty, a.accounts.FinishUIA(r.Context(), sess.ID)
}

// uploadSignatures is POST /_matrix/client/v3/keys/signatures/upload.
func (a *API) uploadSignatures(r *http.Request) (any, error) {
	var req map[string]map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	failures, err := a.e2ee.UploadSignatures(r.Context(), string(callerOf(r).UserID), req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"failures": failures}, nil
}
