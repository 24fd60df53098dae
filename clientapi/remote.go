package clientapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/room"
)

// RemoteRooms joins rooms this server is not in, over federation (federation.API implements it).
type RemoteRooms interface {
	// JoinRemote joins userID to roomID through one of servers and returns the join's event ID.
	JoinRemote(ctx context.Context, roomID string, servers []string, userID string, profile room.MemberProfile, reason string) (string, error)
	// ResolveRemoteAlias asks an alias's server for its room and the servers in it.
	ResolveRemoteAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
	// InviteRemote invites a user of another server to a room of this server.
	InviteRemote(ctx context.Context, roomID string, from room.Sender, target, reason string, isDirect bool) (string, error)
	// LeaveRemote rejects an invite to a room this server is not in.
	LeaveRemote(ctx context.Context, roomID, userID, reason string) (string, error)
}

// SetRemoteRooms enables joins of rooms on other servers.
func (a *API) SetRemoteRooms(r RemoteRooms) { a.remote = r }

// joinServers are the servers to ask for a join of a room this server is not in: the via (and
// the deprecated server_name) query parameters, then the server of the room ID (room versions
// before 12 name the creator's server there).
func joinServers(r *http.Request, roomID string, extra []string) []string {
	q := r.URL.Query()
	servers := append(append(append([]string{}, q["via"]...), q["server_name"]...), extra...)
	if _, srv, ok := strings.Cut(roomID, ":"); ok && srv != "" {
		servers = append(servers, srv)
	}
	return servers
}
