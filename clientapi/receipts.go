package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/receipt"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// routesReceipts mounts the receipt and read marker endpoints.
func (a *API) routesReceipts(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Post("/rooms/{roomId}/receipt/{receiptType}/{eventId}", h(a.postReceipt))
	r.Post("/rooms/{roomId}/read_markers", h(a.postReadMarkers))
}

func receiptUser(r *http.Request) receipt.User {
	c := callerOf(r)
	return receipt.User{UserID: string(c.UserID), Localpart: c.Localpart}
}

// postReceipt is POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (a *API) postReceipt(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		ThreadID json.RawMessage `json:"thread_id"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	m := receipt.Mark{Type: pathParam(r, "receiptType"), EventID: pathParam(r, "eventId")}
	if body.ThreadID != nil {
		var t string
		if err := json.Unmarshal(body.ThreadID, &t); err != nil || t == "" {
			return nil, spec.ErrInvalidParam.With("thread_id field must be a non-empty string")
		}
		m.ThreadID = &t
	}
	return empty, a.syncer.Receipts().Post(r.Context(), receiptUser(r), roomID, m)
}

// postReadMarkers is POST /_matrix/client/v3/rooms/{roomId}/read_markers.
func (a *API) postReadMarkers(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		FullyRead   string `json:"m.fully_read"`
		Read        string `json:"m.read"`
		ReadPrivate string `json:"m.read.private"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	return empty, a.syncer.Receipts().ReadMarkers(r.Context(), receiptUser(r), roomID, body.FullyRead, body.Read, body.ReadPrivate)
}
