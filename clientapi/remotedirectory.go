package clientapi

import (
	"context"
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/room"
)

// RemoteDirectory reads what other servers publish: their room directories, spaces this server
// does not know, their users' profiles, and events closer to a timestamp than this server's
// (federation.API implements it).
type RemoteDirectory interface {
	// RemotePublicRooms is the published room directory of another server.
	RemotePublicRooms(ctx context.Context, server string, req room.PublicRoomsRequest) (room.PublicRoomsPage, error)
	// RemoteHierarchy asks the servers in via for a room's federated hierarchy
	// (a room.HierarchyFetcher).
	RemoteHierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (room.SpaceHierarchy, error)
	// RemoteProfile is the profile of a user of another server, or one field of it (field "").
	RemoteProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
	// RemoteTimestampToEvent asks the room's other servers for the event closest to ts.
	RemoteTimestampToEvent(ctx context.Context, roomID string, ts int64, forward bool) (eventID string, originTS int64, err error)
}

// SetRemoteDirectory enables the federated reads of /publicRooms?server=, /hierarchy,
// /profile and /timestamp_to_event.
func (a *API) SetRemoteDirectory(d RemoteDirectory) { a.directory = d }
