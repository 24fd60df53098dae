package clientapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// RemoteKnocks knocks on rooms this server is not in, over federation (federation.API
// implements it).
type RemoteKnocks interface {
	// KnockRemote knocks for userID on roomID through one of servers and returns the knock's
	// event ID.
	KnockRemote(ctx context.Context, roomID string, servers []string, userID string, profile room.MemberProfile, reason string) (string, error)
}

// SetRemoteKnocks enables knocks on rooms of other servers.
func (a *API) SetRemoteKnocks(k RemoteKnocks) { a.knocks = k }

// knockThrough knocks on a room of this server, or on one this server does not know through
// federation (asking servers, the via and server_name parameters and the room ID's server).
func (a *API) knockThrough(r *http.Request, roomID string, servers []string, reason string) error {
	user := string(callerOf(r).UserID)
	profile := a.memberProfile(r, user)
	err := a.rooms.Knock(r.Context(), roomID, a.sender(r, ""), reason, profile)
	if errors.Is(err, spec.ErrNotFound) && a.knocks != nil {
		if known, kerr := a.rooms.KnownRoom(r.Context(), roomID); kerr != nil {
			return kerr
		} else if !known {
			_, err = a.knocks.KnockRemote(r.Context(), roomID, joinServers(r, roomID, servers), user, profile, reason)
		}
	}
	return err
}
