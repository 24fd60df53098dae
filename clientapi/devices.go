package clientapi

import (
	"net/http"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// listDevices is GET /_matrix/client/v3/devices.
func (a *API) listDevices(r *http.Request) (any, error) {
	devs, err := a.accounts.Devices(r.Context(), callerOf(r).Localpart)
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, 0, len(devs))
	for _, d := range devs {
		out = append(out, toDeviceJSON(d))
	}
	return map[string]any{"devices": out}, nil
}

// getDevice is GET /_matrix/client/v3/devices/{deviceId}.
func (a *API) getDevice(r *http.Request) (any, error) {
	d, err := a.accounts.Device(r.Context(), callerOf(r).Localpart, pathParam(r, "deviceId"))
	if err != nil {
		return nil, err
	}
	return toDeviceJSON(d), nil
}

// putDevice is PUT /_matrix/client/v3/devices/{deviceId}: renames a device.
func (a *API) putDevice(r *http.Request) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	c := callerOf(r)
	id := pathParam(r, "deviceId")
	if req.DisplayName == nil {
		_, err := a.accounts.Device(r.Context(), c.Localpart, id)
		return empty, err
	}
	return empty, a.accounts.RenameDevice(r.Context(), c.Localpart, id, *req.DisplayName)
}

// passwordFlows is the UIA every sensitive account operation asks for.
var passwordFlows = []account.Flow{{Stages: []string{account.StagePassword}}}

// deleteDevice is DELETE /_matrix/client/v3/devices/{deviceId} (user-interactive auth).
func (a *API) deleteDevice(r *http.Request) (any, error) {
	var req struct {
		Auth *account.AuthDict `json:"auth"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	c := callerOf(r)
	id := pathParam(r, "deviceId")
	if _, err := a.accounts.Device(r.Context(), c.Localpart, id); err != nil {
		return nil, err
	}
	sess, err := a.accounts.Authorize(r.Context(), account.UIARequest{Action: "delete_device:" + id, Localpart: c.Localpart,
		Flows: passwordFlows, Auth: req.Auth})
	if err != nil {
		return nil, err
	}
	if err := a.accounts.DeleteDevices(r.Context(), c.Localpart, []string{id}); err != nil {
		return nil, err
	}
	return empty, a.accounts.FinishUIA(r.Context(), sess.ID)
}

// deleteDevices is POST /_matrix/client/v3/delete_devices (user-interactive auth).
func (a *API) deleteDevices(r *http.Request) (any, error) {
	var req struct {
		Devices *[]string         `json:"devices"`
		Auth    *account.AuthDict `json:"auth"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, missing("devices")
	}
	c := callerOf(r)
	sess, err := a.accounts.Authorize(r.Context(), account.UIARequest{Action: "delete_devices", Localpart: c.Localpart,
		Flows: passwordFlows, Auth: req.Auth})
	if err != nil {
		return nil, err
	}
	if err := a.accounts.DeleteDevices(r.Context(), c.Localpart, *req.Devices); err != nil {
		return nil, err
	}
	return empty, a.accounts.FinishUIA(r.Context(), sess.ID)
}
