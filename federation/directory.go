package federation

import (
	"context"
	"net/http"
	"net/url"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// queryDirectory is GET /_matrix/federation/v1/query/directory?room_alias=: one of our aliases,
// with the servers in the room (ours first) to join through.
func (a *API) queryDirectory(r *http.Request) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return nil, spec.ErrMissingParam.With("room_alias is required")
	}
	roomID, _, err := a.rooms.ResolveAlias(r.Context(), alias)
	if err != nil {
		return nil, err
	}
	servers, err := a.rooms.ServersInRoom(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	servers = slices.DeleteFunc(servers, func(s string) bool { return s == a.serverName })
	return map[string]any{"room_id": roomID, "servers": append([]string{a.serverName}, servers...)}, nil
}

// ResolveRemoteAlias asks the alias's server for the room and the servers to join it through.
func (a *API) ResolveRemoteAlias(ctx context.Context, alias string) (roomID string, servers []string, err error) {
	_, server, ok := cutServer(alias)
	if !ok {
		return "", nil, spec.ErrInvalidParam.Withf("Invalid room alias %q", alias)
	}
	var resp struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	if err := a.client.DoJSON(ctx, server, "GET", "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), nil, &resp); err != nil {
		return "", nil, spec.ErrNotFound.Withf("Room alias %s could not be resolved: %v", alias, err)
	}
	if resp.RoomID == "" {
		return "", nil, spec.ErrNotFound.Withf("Room alias %s not found", alias)
	}
	return resp.RoomID, append(resp.Servers, server), nil
}

// cutServer splits "#local:server" or "!id:server" at the first colon.
func cutServer(id string) (local, server string, ok bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == ':' {
			return id[:i], id[i+1:], i > 0 && i < len(id)-1
		}
	}
	return "", "", false
}
