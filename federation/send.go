package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// pduResult is one entry of the /send response's "pdus": {} when processed, {"error": ...} when
// the event was dropped or rejected.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// sendTransaction is PUT /_matrix/federation/v1/send/{txnId}: a transaction of up to 50 PDUs
// and 100 EDUs from the origin. It is idempotent per (origin, txnId): the response is stored with
// the transaction, and a repeat (a retry after a lost response, or one arriving while the first
// is still being processed) gets the same response without being processed again. An event that
// is dropped or rejected is reported in its entry of "pdus"; the request itself succeeds.
// EDUs are dispatched to their handlers, key EDUs before the PDUs and the others after (edu.go).
func (a *API) sendTransaction(r *http.Request) (any, error) {
	ctx := r.Context()
	origin, txnID := Origin(ctx), chi.URLParam(r, "txnId")
	if resp, err := a.store.Read().InboundTxn(ctx, origin, txnID); err == nil {
		return json.RawMessage(resp), nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	var txn transaction
	if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
		return nil, spec.ErrBadJSON.With("The transaction is not a JSON object of the expected shape")
	}
	if txn.Origin != origin {
		return nil, spec.ErrForbidden.With("The transaction's origin is not the server that signed the request")
	}
	if len(txn.PDUs) > maxPDUsPerTxn || len(txn.EDUs) > maxEDUsPerTxn {
		return nil, spec.ErrBadJSON.Withf("A transaction carries at most %d PDUs and %d EDUs", maxPDUsPerTxn, maxEDUsPerTxn)
	}
	done, first := a.inflight.start(origin + "\x00" + txnID)
	if !first {
		// The same transaction is being processed: wait for it and answer what it answered.
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		resp, err := a.store.Read().InboundTxn(ctx, origin, txnID)
		if err != nil {
			return nil, spec.ErrUnknown.With("The transaction is being processed; retry")
		}
		return json.RawMessage(resp), nil
	}
	defer a.inflight.end(origin + "\x00" + txnID)

	a.receiveEDUs(ctx, origin, txn.EDUs, true) // keys first (edu.go)
	results, err := a.receiveTransaction(ctx, origin, txn.PDUs)
	if err != nil {
		return nil, err
	}
	a.receiveEDUs(ctx, origin, txn.EDUs, false)
	resp, err := json.Marshal(map[string]any{"pdus": results})
	if err != nil {
		return nil, err
	}
	if err := a.store.Write(ctx, func(c storage.Conn) error {
		return c.InsertInboundTxn(ctx, origin, txnID, resp, time.Now().UnixMilli())
	}); err != nil {
		return nil, err
	}
	return json.RawMessage(resp), nil
}

// receiveTransaction runs the PDU pipeline on a transaction's PDUs and returns the result of each,
// by event ID (PDUs too broken to have an event ID get none). An error means the transaction
// could not be processed (the origin retries it).
func (a *API) receiveTransaction(ctx context.Context, origin string, raws []json.RawMessage) (map[string]pduResult, error) {
	results := make(map[string]pduResult, len(raws))
	byRoom := map[string][]*event.PDU{}
	var rooms []string
	for _, c := range a.checkPDUs(ctx, raws) {
		switch {
		case c.err != nil && c.pdu != nil:
			results[c.pdu.EventID] = pduResult{Error: c.err.Error()}
		case c.err != nil:
			a.log.Debug("federation: dropped a PDU", "origin", origin, "room_id", c.roomID, "err", c.err)
		default:
			if _, ok := byRoom[c.roomID]; !ok {
				rooms = append(rooms, c.roomID)
			}
			byRoom[c.roomID] = append(byRoom[c.roomID], c.pdu)
		}
	}
	for _, roomID := range rooms {
		v, err := a.roomVersion(ctx, roomID)
		if err != nil {
			return nil, err
		}
		outs, err := a.receiveAllowedPDUs(ctx, origin, roomID, v, byRoom[roomID]) // acl.go
		if err != nil {
			return nil, err
		}
		for id, err := range outs {
			var rej *room.RejectedError
			switch {
			case err == nil:
				results[id] = pduResult{}
			case errors.As(err, &rej):
				a.log.Info("federation: rejected an event", "origin", origin, "event_id", id, "reason", rej.Reason)
				results[id] = pduResult{Error: err.Error()}
			default:
				results[id] = pduResult{Error: err.Error()}
			}
		}
	}
	return results, nil
}

// inflight tracks keys being processed, so that a second request for the same key waits for the
// first instead of running alongside it.
type inflight struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// start registers key; first is false when it is already in flight (then done closes when it ends).
func (f *inflight) start(key string) (done <-chan struct{}, first bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.m[key]; ok {
		return ch, false
	}
	if f.m == nil {
		f.m = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	f.m[key] = ch
	return ch, true
}

func (f *inflight) end(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.m[key])
	delete(f.m, key)
}
