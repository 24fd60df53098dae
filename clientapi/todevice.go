package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// SetToDevice gives the API the to-device service (before serving).
func (a *API) SetToDevice(t *e2ee.ToDevice) { a.toDevice = t }

// routesToDevice mounts the send-to-device endpoint.
func (a *API) routesToDevice(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Put("/sendToDevice/{eventType}/{txnId}", h(a.sendToDevice))
}

// sendToDevice is PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}.
func (a *API) sendToDevice(r *http.Request) (any, error) {
	var body struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Messages == nil {
		return nil, missing("messages")
	}
	return empty, a.sendToDeviceAs(r.Context(), callerOf(r), pathParam(r, "eventType"), pathParam(r, "txnId"), body.Messages)
}

// sendToDeviceAs sends to-device messages for the caller's device: PUT /sendToDevice and the
// WebSocket's "to_device" both come here, so a txn_id is the same transaction over either.
func (a *API) sendToDeviceAs(ctx context.Context, c account.Caller, eventType, txnID string, messages map[string]map[string]json.RawMessage) error {
	if a.toDevice == nil {
		return spec.ErrUnrecognized.With("To-device messaging is not available")
	}
	return a.toDevice.Send(ctx, string(c.UserID), c.DeviceID, eventType, txnID, messages)
}

// wsToDevice is the WebSocket's {"type":"to_device"}: PUT /sendToDevice/{event_type}/{txn_id} with
// messages as the body.
type wsToDevice struct {
	EventType string                                `json:"event_type"`
	TxnID     string                                `json:"txn_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// toDevice sends to-device messages, idempotent per device on (event_type, txn_id) exactly like
// PUT /sendToDevice: the same txn_id over HTTP or WebSocket is one transaction.
func (wc *wsConn) toDevice(ctx context.Context, data []byte) error {
	var m wsToDevice
	if err := unmarshalObject(data, &m); err != nil {
		return err
	}
	switch {
	case m.EventType == "":
		return missing("event_type")
	case m.TxnID == "":
		return missing("txn_id")
	case m.Messages == nil:
		return missing("messages")
	}
	return wc.a.sendToDeviceAs(ctx, wc.caller, m.EventType, m.TxnID, m.Messages)
}
