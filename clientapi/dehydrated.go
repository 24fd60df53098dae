package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Dehydrated devices, MSC3814, under /_matrix/client/unstable/org.matrix.msc3814.v1 (advertised
// as the unstable feature org.matrix.msc3814).

// SetDehydrated gives the API the dehydrated-device service (before serving).
func (a *API) SetDehydrated(d *e2ee.Dehydrated) { a.dehydrated = d }

// routesDehydratedDevice mounts the MSC3814 endpoints (on the unstable prefix, authenticated).
func (a *API) routesDehydratedDevice(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, a.withDehydrated(fn)) }
	r.Put("/dehydrated_device", h(a.putDehydratedDevice))
	r.Get("/dehydrated_device", h(a.getDehydratedDevice))
	r.Delete("/dehydrated_device", h(a.deleteDehydratedDevice))
	r.Post("/dehydrated_device/{deviceId}/events", h(a.dehydratedDeviceEvents))
	r.Get("/dehydrated_device/{deviceId}/events", h(a.dehydratedDeviceEvents)) // the MSC's text: ?from=
}

func (a *API) withDehydrated(fn handler) handler {
	return func(r *http.Request) (any, error) {
		if a.dehydrated == nil {
			return nil, spec.ErrUnrecognized.With("Dehydrated devices are not available")
		}
		return fn(r)
	}
}

// putDehydratedDevice is PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
func (a *API) putDehydratedDevice(r *http.Request) (any, error) {
	var body struct {
		DeviceID    string          `json:"device_id"`
		DeviceData  json.RawMessage `json:"device_data"`
		DisplayName *string         `json:"initial_device_display_name"`
		e2ee.DehydratedKeys
	}
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	if err := a.dehydrated.Put(r.Context(), callerOf(r).Localpart, body.DeviceID, body.DeviceData, body.DisplayName,
		body.DehydratedKeys); err != nil {
		return nil, err
	}
	return map[string]string{"device_id": body.DeviceID}, nil
}

// getDehydratedDevice is GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
func (a *API) getDehydratedDevice(r *http.Request) (any, error) {
	return a.dehydrated.Get(r.Context(), callerOf(r).Localpart)
}

// deleteDehydratedDevice is DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
func (a *API) deleteDehydratedDevice(r *http.Request) (any, error) {
	id, err := a.dehydrated.Delete(r.Context(), callerOf(r).Localpart)
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": id}, nil
}

// dehydratedDeviceEvents is POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events
// with an optional {"next_batch": ...} (or GET with ?from=, as the MSC's text has it).
func (a *API) dehydratedDeviceEvents(r *http.Request) (any, error) {
	var body struct {
		NextBatch string `json:"next_batch"`
	}
	if r.Method == http.MethodGet {
		body.NextBatch = r.URL.Query().Get("from")
	} else if err := decodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	events, next, err := a.dehydrated.Events(r.Context(), callerOf(r).Localpart, pathParam(r, "deviceId"), body.NextBatch, 0)
	if err != nil {
		return nil, err
	}
	if events == nil {
		events = []json.RawMessage{}
	}
	resp := map[string]any{"events": events}
	if next != "" {
		resp["next_batch"] = next
	}
	return resp, nil
}
