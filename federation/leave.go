package federation

import (
	"net/http"

	"github.com/hearthmx/homeserver/homeserver/room"
)

// Leaves over federation ("Leaving Rooms (Rejecting Invites)"), resident side: a server that is
// not in the room (its user was invited, or knocked) leaves through us. A server in the room
// sends its users' leaves itself, through /send.

// makeLeave is GET /_matrix/federation/v1/make_leave/{roomId}/{userId}.
func (a *API) makeLeave(r *http.Request) (any, error) {
	return a.makeMembership(r, room.MembershipLeave, nil)
}

// sendLeave is PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}: the leave is received
// like any event and relayed to the room's other servers.
func (a *API) sendLeave(r *http.Request) (any, error) {
	if _, err := a.acceptMembership(r, room.MembershipLeave); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}
