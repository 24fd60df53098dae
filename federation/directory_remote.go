package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// What the client-server API asks of other servers for its directory, space, profile and
// timestamp endpoints (clientapi.RemoteDirectory): the server-server counterparts of
// publicrooms.go, hierarchy.go, profile.go and timestamp.go.

const (
	// remoteQueryTimeout bounds each request made for a client who waits for the answer.
	remoteQueryTimeout = 15 * time.Second
	// maxServersAsked bounds the servers one hierarchy or timestamp query tries.
	maxServersAsked = 5
	// profileCacheTTL and hierarchyCacheTTL are how long answers are kept (the spec suggests
	// caching both); profile answers include "not found".
	profileCacheTTL   = time.Minute
	hierarchyCacheTTL = 5 * time.Minute
	// failureCacheTTL is how long a hierarchy no server gave is not asked again.
	failureCacheTTL = time.Minute
	// maxCacheEntries bounds each cache; a full cache drops its expired entries, or all.
	maxCacheEntries = 10000
)

// RemotePublicRooms is /publicRooms?server=: the published room directory of another server,
// with GET when the request has no filter, else POST.
func (a *API) RemotePublicRooms(ctx context.Context, server string, req room.PublicRoomsRequest) (room.PublicRoomsPage, error) {
	ctx, cancel := context.WithTimeout(ctx, remoteQueryTimeout)
	defer cancel()
	var page room.PublicRoomsPage
	var err error
	if req.SearchTerm == "" && len(req.RoomTypes) == 0 {
		q := url.Values{}
		if req.Limit > 0 {
			q.Set("limit", strconv.Itoa(req.Limit))
		}
		if req.Since != "" {
			q.Set("since", req.Since)
		}
		if req.IncludeAllNetworks {
			q.Set("include_all_networks", "true")
		}
		if req.ThirdPartyInstanceID != "" {
			q.Set("third_party_instance_id", req.ThirdPartyInstanceID)
		}
		path := "/_matrix/federation/v1/publicRooms"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		err = a.client.DoJSON(ctx, server, "GET", path, nil, &page)
	} else {
		body := publicRoomsBody{Since: req.Since, IncludeAllNetworks: req.IncludeAllNetworks, ThirdPartyInstanceID: req.ThirdPartyInstanceID}
		if req.Limit > 0 {
			body.Limit = &req.Limit
		}
		body.Filter = &struct {
			GenericSearchTerm string    `json:"generic_search_term,omitempty"`
			RoomTypes         []*string `json:"room_types,omitempty"`
		}{req.SearchTerm, req.RoomTypes}
		err = a.client.DoJSON(ctx, server, "POST", "/_matrix/federation/v1/publicRooms", body, &page)
	}
	if err != nil {
		return room.PublicRoomsPage{}, a.remoteFailure(ctx, "the room directory of "+server, err)
	}
	if page.Chunk == nil {
		page.Chunk = []room.PublicRoom{}
	}
	page.Chunk = slices.DeleteFunc(page.Chunk, func(r room.PublicRoom) bool { return r.RoomID == "" })
	return page, nil
}

// RemoteHierarchy asks the servers in via (at most maxServersAsked, this one skipped) for a
// room's federated hierarchy, and keeps answers for hierarchyCacheTTL (failures for
// failureCacheTTL). It is the
// room.HierarchyFetcher of the client-server /hierarchy.
func (a *API) RemoteHierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (room.SpaceHierarchy, error) {
	key := roomID + "\x00" + strconv.FormatBool(suggestedOnly)
	type answer struct {
		h   room.SpaceHierarchy
		err error
	}
	if v, ok := a.remote.hierarchies.get(key); ok {
		return v.(answer).h, v.(answer).err
	}
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID) + "?suggested_only=" + strconv.FormatBool(suggestedOnly)
	var errs []error
	for _, server := range a.serversToAsk(via) {
		var h room.SpaceHierarchy
		err := a.queryRemote(ctx, server, "GET", path, &h)
		if err == nil && h.Room.RoomID != roomID {
			err = fmt.Errorf("%s answered the hierarchy of %q for %s", server, h.Room.RoomID, roomID)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		a.remote.hierarchies.put(key, answer{h: h}, hierarchyCacheTTL)
		return h, nil
	}
	if len(errs) == 0 {
		return room.SpaceHierarchy{}, spec.ErrNotFound.With("No server to ask about the room")
	}
	err := a.remoteFailure(ctx, "the hierarchy of "+roomID, errors.Join(errs...))
	if ctx.Err() == nil { // not when the failure is our caller giving up
		a.remote.hierarchies.put(key, answer{err: err}, failureCacheTTL)
	}
	return room.SpaceHierarchy{}, err
}

// RemoteProfile is GET /profile/{userId} (field "") or /profile/{userId}/{field} for a user of
// another server: /query/profile on the user's server, kept for profileCacheTTL. M_NOT_FOUND when
// that server says so or leaves the field out.
func (a *API) RemoteProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	u, err := spec.ParseUserID(userID)
	if err != nil {
		return nil, spec.ErrInvalidParam.Withf("Invalid user ID: %v", err)
	}
	key := userID + "\x00" + field
	type answer struct {
		fields map[string]json.RawMessage
		err    error
	}
	if v, ok := a.remote.profiles.get(key); ok {
		return v.(answer).fields, v.(answer).err
	}
	path := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(userID)
	if field != "" {
		path += "&field=" + url.QueryEscape(field)
	}
	var fields map[string]json.RawMessage
	err = a.queryRemote(ctx, u.ServerName(), "GET", path, &fields)
	for k, v := range fields {
		if string(v) == "null" {
			delete(fields, k) // "omitted or set to null" are the same: not set
		}
	}
	var fe *fedclient.Error
	switch {
	case errors.As(err, &fe) && fe.Status == http.StatusNotFound:
		err = spec.ErrNotFound.With("Profile not found")
	case err != nil:
		return nil, a.remoteFailure(ctx, "the profile of "+userID, err) // not kept: the next request tries again
	case len(fields) == 0:
		err = spec.ErrNotFound.With("Profile not found")
	case field != "":
		v, ok := fields[field]
		if !ok {
			err = spec.ErrNotFound.Withf("The user has no %s", field)
		}
		fields = map[string]json.RawMessage{field: v}
	}
	if err != nil {
		fields = nil
	}
	a.remote.profiles.put(key, answer{fields, err}, profileCacheTTL)
	return fields, err
}

// RemoteTimestampToEvent asks the other servers of a room, those whose members joined first
// first, for the event closest to ts, and checks the answer with /event (the event of that
// room, signed, at the timestamp it claims). M_NOT_FOUND when none knows one.
func (a *API) RemoteTimestampToEvent(ctx context.Context, roomID string, ts int64, forward bool) (string, int64, error) {
	v, err := a.roomVersion(ctx, roomID)
	if err != nil {
		return "", 0, spec.ErrNotFound.With("Room not found")
	}
	servers, err := a.serversByJoinAge(ctx, roomID)
	if err != nil {
		return "", 0, err
	}
	dir := "b"
	if forward {
		dir = "f"
	}
	path := "/_matrix/federation/v1/timestamp_to_event/" + url.PathEscape(roomID) + "?ts=" + strconv.FormatInt(ts, 10) + "&dir=" + dir
	for _, server := range a.serversToAsk(servers) {
		var resp struct {
			EventID        string `json:"event_id"`
			OriginServerTS int64  `json:"origin_server_ts"`
		}
		if err := a.queryRemote(ctx, server, "GET", path, &resp); err != nil {
			a.log.Debug("federation: timestamp_to_event", "server", server, "room_id", roomID, "err", err)
			continue
		}
		if forward && resp.OriginServerTS < ts || !forward && resp.OriginServerTS > ts {
			continue // on the wrong side of ts
		}
		cctx, cancel := context.WithTimeout(ctx, remoteQueryTimeout)
		raw, err := a.fetchEvent(cctx, server, resp.EventID)
		cancel()
		if err != nil {
			continue
		}
		p, err := a.checkPDU(ctx, v, raw)
		if err != nil || p.EventID != resp.EventID || p.EffectiveRoomID() != roomID || p.OriginServerTS != resp.OriginServerTS {
			a.log.Info("federation: timestamp_to_event answer does not check out", "server", server, "event_id", resp.EventID, "err", err)
			continue
		}
		return p.EventID, p.OriginServerTS, nil
	}
	return "", 0, spec.ErrNotFound.With("No server of the room knows a closer event")
}

// serversByJoinAge are the servers with joined members in a room, by their earliest current join.
func (a *API) serversByJoinAge(ctx context.Context, roomID string) ([]string, error) {
	ms, err := a.store.Read().RoomMembers(ctx, roomID, room.MembershipJoin)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ms, func(x, y storage.Membership) int { return int(x.StreamPos - y.StreamPos) })
	var out []string
	for _, m := range ms {
		if _, server, ok := cutServer(m.UserID); ok && !slices.Contains(out, server) {
			out = append(out, server)
		}
	}
	return out, nil
}

// serversToAsk are the first maxServersAsked distinct valid servers of list, this one left out.
func (a *API) serversToAsk(list []string) []string {
	var out []string
	for _, s := range list {
		if s == a.serverName || slices.Contains(out, s) || spec.ValidServerName(s) != nil {
			continue
		}
		if out = append(out, s); len(out) == maxServersAsked {
			break
		}
	}
	return out
}

// queryRemote is one request of a client's query, bounded by remoteQueryTimeout.
func (a *API) queryRemote(ctx context.Context, server, method, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, remoteQueryTimeout)
	defer cancel()
	return a.client.DoJSON(ctx, server, method, path, nil, out)
}

// remoteFailure is the error a client gets when another server did not give what was asked: the
// other server's 4xx Matrix errors as they are, anything else (no connection, timeout, 5xx, a
// malformed answer) 502 M_UNKNOWN, with the cause logged rather than sent.
func (a *API) remoteFailure(ctx context.Context, what string, err error) error {
	var fe *fedclient.Error
	if errors.As(err, &fe) && fe.Code != "" && fe.Status >= 400 && fe.Status < 500 && fe.Status != http.StatusUnauthorized {
		return &spec.Error{Code: fe.Code, Status: fe.Status, Message: fe.Message}
	}
	a.log.InfoContext(ctx, "federation: remote query failed", "what", what, "err", err)
	return spec.ErrUnknown.Withf("Could not fetch %s", what).WithStatus(http.StatusBadGateway)
}

// remoteCaches are the short-lived caches of answers from other servers.
type remoteCaches struct {
	profiles, hierarchies ttlCache
}

// ttlCache is a small map whose entries expire.
type ttlCache struct {
	mu sync.Mutex
	m  map[string]ttlEntry
}

type ttlEntry struct {
	v       any
	expires time.Time
}

func (c *ttlCache) get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || time.Now().After(e.expires) {
		return nil, false
	}
	return e.v, true
}

func (c *ttlCache) put(key string, v any, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.m == nil {
		c.m = map[string]ttlEntry{}
	}
	if len(c.m) >= maxCacheEntries {
		for k, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxCacheEntries {
			clear(c.m)
		}
	}
	c.m[key] = ttlEntry{v, now.Add(ttl)}
}
