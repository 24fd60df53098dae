package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Third-party invites ("Third-party invites"), both sides. Our client API makes no third-party
// invites itself (no identity server integration), but a room may hold m.room.third_party_invite
// events (sent as state by a client, or by another server's users), and our users may bind
// addresses that other servers invited:
//
//	identity server ──PUT /v1/3pid/onbind──▶ invited user's server (onBind)
//	                                          in the room: sends the invite itself
//	                                          else: PUT /v1/exchange_third_party_invite ──▶ resident
//	resident (exchangeThirdPartyInvite): checks, builds the invite as the m.room.third_party_invite's
//	sender, then PUT /v2/invite to the invited user's server, as any invite.
//
// The auth rules decide (rule 4.4.1): the signed object must carry a signature that verifies with
// a public key of the room's m.room.third_party_invite with the same token. Key revocation
// (key_validity_url) is not checked.

// maxOnBindInvites bounds the invites of one /3pid/onbind, an unauthenticated request.
const maxOnBindInvites = 100

// maxOnBindBody bounds its body.
const maxOnBindBody = 1 << 20

// thirdPartyInviteBody is the partial m.room.member event of exchange_third_party_invite.
type thirdPartyInviteBody struct {
	Type     string `json:"type"`
	RoomID   string `json:"room_id"`
	Sender   string `json:"sender"`
	StateKey string `json:"state_key"`
	Content  struct {
		Membership       string `json:"membership"`
		ThirdPartyInvite struct {
			DisplayName string          `json:"display_name"`
			Signed      json.RawMessage `json:"signed"`
		} `json:"third_party_invite"`
	} `json:"content"`
}

// exchangeThirdPartyInvite is PUT /_matrix/federation/v1/exchange_third_party_invite/{roomId}.
func (a *API) exchangeThirdPartyInvite(r *http.Request) (any, error) {
	ctx := r.Context()
	roomID, origin := chi.URLParam(r, "roomId"), Origin(ctx)
	var body thirdPartyInviteBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		return nil, spec.ErrBadJSON.With("The body is not a partial m.room.member event")
	}
	tpi := body.Content.ThirdPartyInvite
	switch {
	case body.Type != room.TypeMember:
		return nil, spec.ErrInvalidParam.With("type must be m.room.member")
	case body.RoomID != roomID:
		return nil, spec.ErrInvalidParam.With("room_id is not the room of the path")
	case body.Content.Membership != room.MembershipInvite:
		return nil, spec.ErrInvalidParam.With("content.membership must be invite")
	case len(tpi.Signed) == 0 || tpi.Signed[0] != '{':
		return nil, spec.ErrMissingParam.With("content.third_party_invite.signed is required")
	case !validUserID(body.Sender) || !validUserID(body.StateKey):
		return nil, spec.ErrInvalidParam.With("sender and state_key must be user IDs")
	case serverName(body.StateKey) != origin:
		return nil, spec.ErrForbidden.With("The invited user is not on the requesting server")
	case serverName(body.Sender) != a.serverName:
		return nil, spec.ErrForbidden.With("The third-party invite's sender is not a user of this server")
	}
	if in, err := a.rooms.ServerInRoom(ctx, roomID, a.serverName); err != nil {
		return nil, err
	} else if !in {
		return nil, spec.ErrNotFound.With("Unknown room")
	}
	v, inv, state, err := a.rooms.PrepareThirdPartyInvite(ctx, roomID, body.Sender, body.StateKey, tpi.Signed)
	if err != nil {
		return nil, err
	}
	if _, err := a.sendInvite(ctx, v, inv, state); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// onBindInvite is one pending invite of /3pid/onbind.
type onBindInvite struct {
	Medium  string          `json:"medium"`
	Address string          `json:"address"`
	MXID    string          `json:"mxid"`
	RoomID  string          `json:"room_id"`
	Sender  string          `json:"sender"`
	Signed  json.RawMessage `json:"signed"`
}

// onBind is PUT /_matrix/federation/v1/3pid/onbind (unauthenticated: the identity server calls
// it). Each pending invite becomes an invite of the now bound user: sent by this server when it
// is in the room, else asked of the room's servers with exchange_third_party_invite. An invite
// that fails is logged and skipped (the request cannot tell the identity server more).
func (a *API) onBind(r *http.Request) (any, error) {
	ctx := r.Context()
	var body struct {
		Medium  string         `json:"medium"`
		Address string         `json:"address"`
		MXID    string         `json:"mxid"`
		Invites []onBindInvite `json:"invites"`
	}
	// Unauthenticated: the X-Matrix middleware's body limit does not apply.
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxOnBindBody)).Decode(&body); err != nil {
		return nil, spec.ErrBadJSON.With("Expected {medium, address, mxid, invites}")
	}
	switch {
	case body.Medium == "" || body.Address == "" || body.MXID == "" || body.Invites == nil:
		return nil, spec.ErrMissingParam.With("medium, address, mxid and invites are required")
	case !validUserID(body.MXID) || serverName(body.MXID) != a.serverName:
		return nil, spec.ErrInvalidParam.With("mxid is not a user of this server")
	case len(body.Invites) > maxOnBindInvites:
		return nil, spec.ErrInvalidParam.Withf("At most %d invites at a time", maxOnBindInvites)
	}
	localpart, _, _ := cutServer(body.MXID[1:])
	if acc, err := a.store.Read().Account(ctx, localpart); errors.Is(err, storage.ErrNotFound) || err == nil && acc.Deactivated {
		return nil, spec.ErrNotFound.With("No such user on this server")
	} else if err != nil {
		return nil, err
	}
	for _, inv := range body.Invites {
		if err := a.bindInvite(ctx, body.MXID, inv); err != nil {
			a.log.Warn("federation: third-party invite not exchanged", "room_id", inv.RoomID, "user_id", body.MXID, "sender", inv.Sender, "err", err)
		}
	}
	return map[string]any{}, nil
}

// bindInvite turns one pending third-party invite of userID into an invite.
func (a *API) bindInvite(ctx context.Context, userID string, inv onBindInvite) error {
	var signed struct {
		MXID string `json:"mxid"`
	}
	switch {
	case inv.MXID != userID:
		return fmt.Errorf("the invite is for %s", inv.MXID)
	case !validUserID(inv.Sender) || len(inv.RoomID) < 2 || inv.RoomID[0] != '!':
		return fmt.Errorf("invalid sender or room_id")
	case json.Unmarshal(inv.Signed, &signed) != nil || signed.MXID != userID:
		return fmt.Errorf("signed is not an object for %s", userID)
	}
	if in, err := a.rooms.ServerInRoom(ctx, inv.RoomID, a.serverName); err != nil {
		return err
	} else if in {
		_, err := a.rooms.AppendThirdPartyInvite(ctx, inv.RoomID, inv.Sender, userID, inv.Signed)
		return err
	}
	// display_name is left out: the resident takes it from its m.room.third_party_invite (as
	// Synapse and Dendrite do, and as we do in exchangeThirdPartyInvite), and the address it
	// would otherwise be is not for the room to see.
	body := map[string]any{"type": room.TypeMember, "room_id": inv.RoomID, "sender": inv.Sender, "state_key": userID,
		"content": map[string]any{"membership": room.MembershipInvite, "third_party_invite": map[string]any{"signed": inv.Signed}}}
	servers := []string{serverName(inv.Sender)}
	if _, srv, ok := cutServer(inv.RoomID); ok && srv != servers[0] {
		servers = append(servers, srv)
	}
	var errs []error
	for _, srv := range servers {
		if srv == a.serverName {
			continue
		}
		path := "/_matrix/federation/v1/exchange_third_party_invite/" + url.PathEscape(inv.RoomID)
		err := a.client.DoJSON(ctx, srv, "PUT", path, body, &struct{}{})
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", srv, err))
	}
	return errors.Join(errs...)
}

// validUserID reports whether s is a syntactically valid user ID.
func validUserID(s string) bool {
	_, err := spec.ParseUserID(s)
	return err == nil
}
