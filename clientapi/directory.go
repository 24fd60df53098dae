package clientapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// routesDirectory mounts the room directory, aliases, upgrades, forget and knock (v3).
// routesDirectoryPublic mounts the directory reads the spec lets anyone make without logging in.
func (a *API) routesDirectoryPublic(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Get("/directory/room/{roomAlias}", h(a.getAlias))
	r.Get("/directory/list/room/{roomId}", h(a.getDirectoryVisibility))
	r.Get("/publicRooms", h(a.publicRoomsGet))
}

func (a *API) routesDirectory(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Put("/directory/room/{roomAlias}", h(a.putAlias))
	r.Delete("/directory/room/{roomAlias}", h(a.deleteAlias))
	r.Get("/rooms/{roomId}/aliases", h(a.roomAliases))
	r.Put("/directory/list/room/{roomId}", h(a.putDirectoryVisibility))
	r.Post("/publicRooms", h(a.publicRoomsPost))
	r.Post("/user_directory/search", h(a.searchUserDirectory))
	r.Post("/rooms/{roomId}/forget", h(a.forget))
	r.With(a.rateLimited).Post("/knock/{roomIdOrAlias}", h(a.knock))
	r.With(a.rateLimited).Post("/rooms/{roomId}/upgrade", h(a.upgradeRoom))
}

// routesDirectoryV1 mounts the v1 endpoints of the same area (/hierarchy, /timestamp_to_event).
func (a *API) routesDirectoryV1(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Get("/rooms/{roomId}/hierarchy", h(a.hierarchy))
	r.Get("/rooms/{roomId}/timestamp_to_event", h(a.timestampToEvent))
}

// getAlias is GET /_matrix/client/v3/directory/room/{roomAlias}. An alias of another server is
// asked of that server (GET /_matrix/federation/v1/query/directory).
func (a *API) getAlias(r *http.Request) (any, error) {
	alias := pathParam(r, "roomAlias")
	roomID, servers, err := a.rooms.LookupAlias(r.Context(), alias)
	if _, srv, _ := strings.Cut(alias, ":"); errors.Is(err, spec.ErrNotFound) && a.remote != nil && srv != "" && srv != a.cfg.ServerName {
		roomID, servers, err = a.remote.ResolveRemoteAlias(r.Context(), alias)
	}
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	unique := []string{}
	for _, s := range servers {
		if !seen[s] {
			seen[s] = true
			unique = append(unique, s)
		}
	}
	return map[string]any{"room_id": roomID, "servers": unique}, nil
}

// putAlias is PUT /_matrix/client/v3/directory/room/{roomAlias}.
func (a *API) putAlias(r *http.Request) (any, error) {
	var req struct {
		RoomID string `json:"room_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RoomID == "" {
		return nil, missing("room_id")
	}
	if !strings.HasPrefix(req.RoomID, "!") || len(req.RoomID) > 255 {
		return nil, spec.ErrInvalidParam.Withf("Invalid room ID %q", req.RoomID)
	}
	c := callerOf(r)
	if err := a.rooms.SetAlias(r.Context(), pathParam(r, "roomAlias"), req.RoomID, string(c.UserID), c.Admin); err != nil {
		return nil, err
	}
	return empty, nil
}

// deleteAlias is DELETE /_matrix/client/v3/directory/room/{roomAlias}.
func (a *API) deleteAlias(r *http.Request) (any, error) {
	c := callerOf(r)
	if err := a.rooms.DeleteAlias(r.Context(), pathParam(r, "roomAlias"), string(c.UserID), c.Admin); err != nil {
		return nil, err
	}
	return empty, nil
}

// roomAliases is GET /_matrix/client/v3/rooms/{roomId}/aliases.
func (a *API) roomAliases(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	c := callerOf(r)
	aliases, err := a.rooms.RoomAliases(r.Context(), roomID, string(c.UserID), c.Admin)
	if err != nil {
		return nil, err
	}
	return map[string]any{"aliases": aliases}, nil
}

// getDirectoryVisibility is GET /_matrix/client/v3/directory/list/room/{roomId}.
func (a *API) getDirectoryVisibility(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	vis, err := a.rooms.DirectoryVisibility(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	return map[string]string{"visibility": vis}, nil
}

// putDirectoryVisibility is PUT /_matrix/client/v3/directory/list/room/{roomId}.
func (a *API) putDirectoryVisibility(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Visibility *string `json:"visibility"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	vis := room.DirectoryPublic // the spec's default
	if req.Visibility != nil {
		vis = *req.Visibility
	}
	c := callerOf(r)
	if err := a.rooms.SetDirectoryVisibility(r.Context(), roomID, string(c.UserID), c.Admin, vis); err != nil {
		return nil, err
	}
	return empty, nil
}

// directoryServer reads the server parameter of /publicRooms: "" for this server's directory,
// else the server whose directory is asked over federation. Only logged-in users may ask for
// other servers' directories, so that anonymous requests cannot make this server query others.
func (a *API) directoryServer(r *http.Request) (string, error) {
	server := r.URL.Query().Get("server")
	if server == "" || server == a.cfg.ServerName {
		return "", nil
	}
	if spec.ValidServerName(server) != nil {
		return "", spec.ErrInvalidParam.Withf("Invalid server name %q", server)
	}
	if a.directory == nil {
		return "", spec.ErrNotFound.Withf("The room directory of %s cannot be fetched without federation", server)
	}
	if callerOf(r).UserID == "" {
		token := accessToken(r)
		if token == "" {
			return "", spec.ErrMissingToken.With("Log in to read the room directories of other servers")
		}
		if _, err := a.accounts.Authenticate(r.Context(), token); err != nil {
			return "", err
		}
	}
	return server, nil
}

// publicRooms answers from this server's directory or, with server, from that server's.
func (a *API) publicRooms(r *http.Request, server string, req room.PublicRoomsRequest) (any, error) {
	if server != "" {
		return a.directory.RemotePublicRooms(r.Context(), server, req)
	}
	return a.rooms.PublicRooms(r.Context(), req)
}

// publicRoomsGet is GET /_matrix/client/v3/publicRooms.
func (a *API) publicRoomsGet(r *http.Request) (any, error) {
	server, err := a.directoryServer(r)
	if err != nil {
		return nil, err
	}
	limit, err := queryLimit(r, 0, room.MaxPublicRoomsLimit)
	if err != nil {
		return nil, err
	}
	return a.publicRooms(r, server, room.PublicRoomsRequest{Limit: limit, Since: r.URL.Query().Get("since")})
}

// publicRoomsPost is POST /_matrix/client/v3/publicRooms.
func (a *API) publicRoomsPost(r *http.Request) (any, error) {
	server, err := a.directoryServer(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Limit  *int   `json:"limit"`
		Since  string `json:"since"`
		Filter *struct {
			GenericSearchTerm string    `json:"generic_search_term"`
			RoomTypes         []*string `json:"room_types"`
		} `json:"filter"`
		IncludeAllNetworks   bool   `json:"include_all_networks"`
		ThirdPartyInstanceID string `json:"third_party_instance_id"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	q := room.PublicRoomsRequest{Since: req.Since, IncludeAllNetworks: req.IncludeAllNetworks, ThirdPartyInstanceID: req.ThirdPartyInstanceID}
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, spec.ErrInvalidParam.With("limit must be a non-negative integer")
		}
		q.Limit = *req.Limit
	}
	if req.Filter != nil {
		q.SearchTerm, q.RoomTypes = req.Filter.GenericSearchTerm, req.Filter.RoomTypes
	}
	return a.publicRooms(r, server, q)
}

// forget is POST /_matrix/client/v3/rooms/{roomId}/forget.
func (a *API) forget(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.Forget(r.Context(), roomID, string(callerOf(r).UserID)); err != nil {
		return nil, err
	}
	return empty, nil
}

// knock is POST /_matrix/client/v3/knock/{roomIdOrAlias}.
func (a *API) knock(r *http.Request) (any, error) {
	target := pathParam(r, "roomIdOrAlias")
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	roomID := target
	var servers []string
	switch {
	case strings.HasPrefix(target, "#"):
		id, _, err := a.rooms.LookupAlias(r.Context(), target)
		if _, srv, _ := strings.Cut(target, ":"); errors.Is(err, spec.ErrNotFound) && a.remote != nil && srv != a.cfg.ServerName {
			id, servers, err = a.remote.ResolveRemoteAlias(r.Context(), target)
		}
		if err != nil {
			return nil, err
		}
		roomID = id
	case !strings.HasPrefix(target, "!") || len(target) > 255:
		return nil, spec.ErrInvalidParam.Withf("%q is neither a room ID nor an alias", target)
	}
	if err := a.knockThrough(r, roomID, servers, req.Reason); err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

// upgradeRoom is POST /_matrix/client/v3/rooms/{roomId}/upgrade.
func (a *API) upgradeRoom(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		NewVersion         *string  `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewVersion == nil {
		return nil, missing("new_version")
	}
	for _, u := range req.AdditionalCreators {
		if _, err := spec.ParseUserID(u); err != nil {
			return nil, spec.ErrInvalidParam.Withf("Invalid user ID %q in additional_creators", u)
		}
	}
	c := callerOf(r)
	newID, err := a.rooms.UpgradeRoom(r.Context(), room.UpgradeRequest{RoomID: roomID, NewVersion: *req.NewVersion,
		AdditionalCreators: req.AdditionalCreators, User: string(c.UserID), Profile: a.memberProfile(r, string(c.UserID))})
	if err != nil {
		return nil, err
	}
	return map[string]string{"replacement_room": newID}, nil
}

// hierarchy is GET /_matrix/client/v1/rooms/{roomId}/hierarchy.
func (a *API) hierarchy(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := room.HierarchyRequest{RoomID: roomID, User: string(callerOf(r).UserID), MaxDepth: -1, From: q.Get("from")}
	if a.directory != nil {
		// Rooms this server does not know are asked of the servers in via (not in the spec:
		// the room ID names no server from version 12) and the room ID's server.
		req.Remote, req.Via = a.directory.RemoteHierarchy, joinServers(r, roomID, nil)
	}
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		req.SuggestedOnly = true
	default:
		return nil, spec.ErrInvalidParam.With("suggested_only must be true or false")
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, spec.ErrInvalidParam.With("limit must be an integer greater than zero")
		}
		req.Limit = n
	}
	if s := q.Get("max_depth"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, spec.ErrInvalidParam.With("max_depth must be a non-negative integer")
		}
		req.MaxDepth = n
	}
	return a.rooms.Hierarchy(r.Context(), req)
}

// timestampToEvent is GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event.
func (a *API) timestampToEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if q.Get("ts") == "" {
		return nil, missing("ts")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, spec.ErrInvalidParam.With("ts must be a timestamp in milliseconds")
	}
	dir := q.Get("dir")
	if dir == "" {
		return nil, missing("dir")
	}
	if dir != "f" && dir != "b" {
		return nil, spec.ErrInvalidParam.With("dir must be f or b")
	}
	forward := dir == "f"
	m, err := a.rooms.ClosestEvent(r.Context(), a.reader(r), roomID, ts, forward)
	if a.directory != nil && (m.NearGap || errors.Is(err, spec.ErrNotFound)) {
		// Other servers may have a closer event (the spec's suggestion): theirs wins when it is.
		if id, originTS, rerr := a.directory.RemoteTimestampToEvent(r.Context(), roomID, ts, forward); rerr == nil &&
			(err != nil || forward && originTS < m.OriginServerTS || !forward && originTS > m.OriginServerTS) {
			m, err = room.TimestampMatch{EventID: id, OriginServerTS: originTS}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": m.EventID, "origin_server_ts": m.OriginServerTS}, nil
}

// searchUserDirectory is POST /_matrix/client/v3/user_directory/search.
func (a *API) searchUserDirectory(r *http.Request) (any, error) {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.SearchTerm == nil {
		return nil, spec.ErrMissingParam.With("search_term is required")
	}
	limit := 10
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, spec.ErrInvalidParam.With("limit must not be negative")
		}
		limit = *req.Limit
	}
	type response struct {
		Results []room.DirectoryUser `json:"results"`
		Limited bool                 `json:"limited"`
	}
	if limit == 0 {
		return response{Results: []room.DirectoryUser{}}, nil
	}
	results, limited, err := a.rooms.SearchUsers(r.Context(), string(callerOf(r).UserID), *req.SearchTerm, limit)
	if err != nil {
		return nil, err
	}
	return response{Results: results, Limited: limited}, nil
}
