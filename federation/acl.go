package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/serveracl"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Server ACLs (server-server API, "Server Access Control Lists (ACLs)"): a room's
// m.room.server_acl says which servers may take part in it. Every request of another server about
// a room is checked against the ACL of the room's current state, by the server that made the
// request (its authenticated origin, not the senders of the events it carries): a denied server
// gets 403 M_FORBIDDEN, its PDUs in /send are dropped with an error entry, and its typing
// notifications and receipts for the room are ignored. Events of users of a denied server relayed
// by an allowed one are not refused: the ACL acts on the network layer (a server that relays
// them does not uphold the ACL, and the room's moderators deny it too).
//
// Events this server sends still go to every server with a joined member, denied ones included:
// "Servers should still send events to denied servers if they are still residents of the room"
// (client-server API, Server ACLs, server behaviour). This server does not ask a denied server
// for anything about the room (missing events, state, backfill): such requests go only to the
// origin of a transaction the ACL let through, or past mayAsk (backfill).

// errDeniedByACL answers a server the room's ACL denies.
var errDeniedByACL = spec.ErrForbidden.With("Your server is denied by the room's server ACL")

// serverAllowed reports whether the room's current m.room.server_acl allows server (a server
// name, port ignored). A room without one, or one this server does not know, allows every server.
func (a *API) serverAllowed(ctx context.Context, roomID, server string) (bool, error) {
	acl, err := a.serverACL(ctx, roomID)
	if err != nil {
		return false, err
	}
	return acl.Allows(server), nil
}

// mayAsk reports whether this server may ask server for events of the room (backfill): not when
// the room's ACL denies it (what a denied server sends would be refused anyway). A failed
// lookup counts as denied (logged): another server is asked instead.
func (a *API) mayAsk(ctx context.Context, roomID, server string) bool {
	ok, err := a.serverAllowed(ctx, roomID, server)
	if err != nil {
		a.log.Warn("federation: reading the room's server ACL", "room_id", roomID, "err", err)
	}
	return ok
}

// checkACL is serverAllowed as a handler's first step: errDeniedByACL when the room's ACL denies
// the request's origin.
func (a *API) checkACL(ctx context.Context, roomID string) error {
	ok, err := a.serverAllowed(ctx, roomID, Origin(ctx))
	if err != nil {
		return err
	}
	if !ok {
		return errDeniedByACL
	}
	return nil
}

// aclGuard is the middleware of the authenticated routes: a request naming a room ({roomId} in
// its path: make_join, send_join, make_leave, send_leave, invite, make_knock, send_knock, state,
// state_ids, event_auth, get_missing_events, backfill and any later room endpoint) from a server
// the room's ACL denies is refused with 403 M_FORBIDDEN before its handler runs. /send checks
// per PDU (receiveTransaction) and /event the event's room (checkEventACL).
func (a *API) aclGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if roomID := chi.URLParam(r, "roomId"); roomID != "" {
			if err := a.checkACL(r.Context(), roomID); err != nil {
				a.writeError(w, r, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// checkEventACL is checkACL for the room of an event in its federation form (GET /event).
func (a *API) checkEventACL(ctx context.Context, pdu json.RawMessage) error {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(pdu, &head); err != nil {
		return err
	}
	return a.checkACL(ctx, head.RoomID)
}

// receiveAllowedPDUs is receivePDUs for the PDUs of one room in a /send from origin, unless the
// room's ACL denies origin: then each is dropped, its entry saying so ("ACLs MUST be applied to
// all PDUs on a per-PDU basis").
func (a *API) receiveAllowedPDUs(ctx context.Context, origin, roomID string, v event.Version, pdus []*event.PDU) (map[string]error, error) {
	ok, err := a.serverAllowed(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if ok {
		return a.receivePDUs(ctx, origin, roomID, v, pdus)
	}
	a.log.Info("federation: dropped PDUs of a server the room's ACL denies", "origin", origin, "room_id", roomID, "count", len(pdus))
	out := make(map[string]error, len(pdus))
	for _, p := range pdus {
		out[p.EventID] = errDeniedByACL
	}
	return out, nil
}

// serverACL is the compiled ACL of the room's current state (nil: none), cached by the state
// event's ID and its redaction, so a new ACL or a redacted one is seen at once.
func (a *API) serverACL(ctx context.Context, roomID string) (*serveracl.ACL, error) {
	c := a.store.Read()
	id, redactedBy, err := c.CurrentStateEventRedacted(ctx, roomID, "m.room.server_acl", "")
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return a.acls.Get(id+"\x00"+redactedBy, func() ([]byte, error) {
		e, err := c.Event(ctx, id)
		if err != nil {
			return nil, err
		}
		var pdu struct {
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(e.PDU, &pdu); err != nil {
			return nil, err
		}
		return pdu.Content, nil
	})
}
