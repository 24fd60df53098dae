package room

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Reads other servers make over federation: single events, the state at an event, auth chains,
// missing events. Each is filtered by what the asking server may see (history visibility for
// servers) and returns events in their federation form, signed by this server when they are its
// own (timeline events are stored unsigned, see build).

// errNotInRoom answers servers with no member in the room.
var errNotInRoom = spec.ErrForbidden.With("Your server is not in this room")

// FederationJSON is an event's federation form as sent to other servers: signed now if it is one
// of this server's events stored unsigned.
func (s *Service) FederationJSON(ctx context.Context, c storage.Conn, e storage.Event) (json.RawMessage, error) {
	if serverOf(e.Sender) != s.opts.ServerName {
		return e.PDU, nil
	}
	v, err := s.versionOf(ctx, c, e.RoomID)
	if err != nil {
		return nil, err
	}
	p, err := event.Parse(v, e.PDU)
	if err != nil {
		return nil, err
	}
	return s.SignPDU(p)
}

// versionOf is the version of a room this server knows.
func (s *Service) versionOf(ctx context.Context, c storage.Conn, roomID string) (event.Version, error) {
	r, err := c.Room(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return event.Version{}, errRoomNotFound
	}
	if err != nil {
		return event.Version{}, err
	}
	return event.LookupVersion(r.Version)
}

// ServerInRoom reports whether a server has a joined member in the room's current state.
func (s *Service) ServerInRoom(ctx context.Context, roomID, server string) (bool, error) {
	servers, err := s.ServersInRoom(ctx, roomID)
	return slices.Contains(servers, server), err
}

// EventForServer is GET /event/{eventId}: the event, if server may see it.
func (s *Service) EventForServer(ctx context.Context, server, eventID string) (json.RawMessage, error) {
	c := s.store.Read()
	e, err := c.Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && e.Rejected {
		return nil, spec.ErrNotFound.With("Event not found")
	}
	if err != nil {
		return nil, err
	}
	sv := newServerView(c, server)
	ok, err := sv.maySee(ctx, e)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, spec.ErrForbidden.With("Your server may not see this event")
	}
	return s.FederationJSON(ctx, c, e)
}

// StateAt is GET /state_ids/{roomId} and /state/{roomId}: the state before an event of the room
// and the auth chain of that state, for a server in the room.
func (s *Service) StateAt(ctx context.Context, server, roomID, eventID string) (state, authChain []storage.Event, err error) {
	c := s.store.Read()
	v, err := s.versionForServer(ctx, c, roomID, server)
	if err != nil {
		return nil, nil, err
	}
	e, err := c.Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (e.RoomID != roomID || e.Rejected || e.Outlier) {
		return nil, nil, spec.ErrNotFound.With("Event not found in this room")
	}
	if err != nil {
		return nil, nil, err
	}
	ids, err := s.stateBeforeEvent(ctx, c, v, e)
	if err != nil {
		return nil, nil, err
	}
	list := make([]string, 0, len(ids))
	for _, id := range ids {
		list = append(list, id)
	}
	slices.Sort(list)
	if state, err = c.Events(ctx, list); err != nil {
		return nil, nil, err
	}
	authChain, err = s.authChain(ctx, c, v, list)
	return state, authChain, err
}

// stateBeforeEvent is the state before a stored timeline event: the state after its prev event,
// or their states resolved. For an event accepted without its prev events (a gap), the state
// after it stands in, without the event itself.
func (s *Service) stateBeforeEvent(ctx context.Context, c storage.Conn, v event.Version, e storage.Event) (storage.StateMap, error) {
	p, err := event.Parse(v, e.PDU)
	if err != nil {
		return nil, err
	}
	metas, err := c.EventMetas(ctx, p.PrevEvents)
	if err != nil {
		return nil, err
	}
	var groups []int64
	for _, id := range p.PrevEvents {
		m, ok := metas[id]
		if !ok || m.Outlier {
			groups = nil
			break
		}
		if !slices.Contains(groups, m.StateGroup) {
			groups = append(groups, m.StateGroup)
		}
	}
	if len(groups) == 0 {
		after, err := c.StateGroup(ctx, e.StateGroup)
		if err != nil {
			return nil, err
		}
		if e.StateKey != nil {
			if k := (storage.StateKey{Type: e.Type, StateKey: *e.StateKey}); after[k] == e.EventID {
				delete(after, k)
			}
		}
		return after, nil
	}
	states := make([]storage.StateMap, len(groups))
	for i, g := range groups {
		if states[i], err = c.StateGroup(ctx, g); err != nil {
			return nil, err
		}
	}
	return s.resolveWith(ctx, c, v, states)
}

// authChain is every event reachable from ids through auth_events (ids themselves only when
// reachable), in no particular order. From v12, where events do not cite the create event because
// the room ID implies it, the create event counts as an auth event of every other event: the
// chain includes it, as other servers expect (Dendrite refuses a send_join answer whose
// auth_chain lacks it).
func (s *Service) authChain(ctx context.Context, c storage.Conn, v event.Version, ids []string) ([]storage.Event, error) {
	seen := make(map[string]bool, len(ids))
	var out []storage.Event
	frontier := ids
	start := true
	for len(frontier) > 0 {
		evs, err := c.Events(ctx, frontier)
		if err != nil {
			return nil, err
		}
		frontier = nil
		for _, e := range evs {
			if !start {
				out = append(out, e)
			}
			p, err := event.Parse(v, e.PDU)
			if err != nil {
				return nil, err
			}
			auth := p.AuthEvents
			if !v.CreateEventInAuthEvents() && p.Type != TypeCreate {
				auth = append(slices.Clip(auth), "$"+strings.TrimPrefix(e.RoomID, "!"))
			}
			frontier = appendUnseen(frontier, seen, auth)
		}
		start = false
	}
	return out, nil
}

// appendUnseen appends the ids not in seen to list and marks them seen: the step of the walks
// through the event graph (auth chains, backfill).
func appendUnseen(list []string, seen map[string]bool, ids []string) []string {
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			list = append(list, id)
		}
	}
	return list
}

// versionForServer is the version of a room, for a server that has a member in it (errNotInRoom
// otherwise).
func (s *Service) versionForServer(ctx context.Context, c storage.Conn, roomID, server string) (event.Version, error) {
	v, err := s.versionOf(ctx, c, roomID)
	if err != nil {
		return event.Version{}, err
	}
	in, err := s.ServerInRoom(ctx, roomID, server)
	if err != nil {
		return event.Version{}, err
	}
	if !in {
		return event.Version{}, errNotInRoom
	}
	return v, nil
}

// AuthChainOf is GET /event_auth/{roomId}/{eventId}: the auth chain of an event, for a server in
// the room.
func (s *Service) AuthChainOf(ctx context.Context, server, roomID, eventID string) ([]storage.Event, error) {
	c := s.store.Read()
	v, err := s.versionForServer(ctx, c, roomID, server)
	if err != nil {
		return nil, err
	}
	e, err := c.Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && e.RoomID != roomID {
		return nil, spec.ErrNotFound.With("Event not found in this room")
	}
	if err != nil {
		return nil, err
	}
	return s.authChain(ctx, c, v, []string{eventID})
}

// MissingEvents is POST /get_missing_events/{roomId}: walking prev_events back from latest, the
// events not reachable from earliest, up to limit, of depth at least minDepth, oldest first.
// Events the server may not see are sent redacted, so the graph stays connected.
func (s *Service) MissingEvents(ctx context.Context, server, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error) {
	c := s.store.Read()
	v, err := s.versionForServer(ctx, c, roomID, server)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, id := range earliest {
		seen[id] = true
	}
	var frontier []string
	starts, err := c.Events(ctx, latest)
	if err != nil {
		return nil, err
	}
	for _, e := range starts {
		if e.RoomID != roomID {
			continue
		}
		seen[e.EventID] = true
		p, err := event.Parse(v, e.PDU)
		if err != nil {
			return nil, err
		}
		frontier = append(frontier, p.PrevEvents...)
	}
	var found []storage.Event
	for len(frontier) > 0 && len(found) < limit {
		var next []string
		var ids []string
		for _, id := range frontier {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		evs, err := c.Events(ctx, ids)
		if err != nil {
			return nil, err
		}
		slices.SortFunc(evs, func(a, b storage.Event) int { return int(b.Depth - a.Depth) })
		for _, e := range evs {
			if len(found) >= limit {
				break
			}
			if e.RoomID != roomID || e.Depth < minDepth || e.Outlier {
				continue
			}
			found = append(found, e)
			p, err := event.Parse(v, e.PDU)
			if err != nil {
				return nil, err
			}
			next = append(next, p.PrevEvents...)
		}
		frontier = next
	}
	slices.SortStableFunc(found, func(a, b storage.Event) int {
		if a.Depth != b.Depth {
			return int(a.Depth - b.Depth)
		}
		return int(a.StreamPos - b.StreamPos)
	})
	sv := newServerView(c, server)
	out := make([]json.RawMessage, 0, len(found))
	for _, e := range found {
		raw, err := s.jsonForServer(ctx, c, sv, v, e) // redacted if the server may not see it
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// serverView decides which events a server may see (history visibility for servers): an event
// is visible if the room was world_readable then; if the server had a joined member then (or an
// invited one, with history_visibility invited); or, with shared history, if the server had a
// joined or invited member then or has a joined one now. It caches per state group.
type serverView struct {
	c       storage.Conn
	server  string
	byGroup map[int64]bool
	now     *bool
}

func newServerView(c storage.Conn, server string) *serverView {
	return &serverView{c: c, server: server, byGroup: map[int64]bool{}}
}

func (sv *serverView) maySee(ctx context.Context, e storage.Event) (bool, error) {
	if ok, done := sv.byGroup[e.StateGroup]; done {
		return ok, nil
	}
	ok, err := sv.decide(ctx, e)
	if err == nil {
		sv.byGroup[e.StateGroup] = ok
	}
	return ok, err
}

func (sv *serverView) decide(ctx context.Context, e storage.Event) (bool, error) {
	joinedNow := func() (bool, error) {
		if sv.now == nil {
			ms, err := sv.c.RoomMembers(ctx, e.RoomID, MembershipJoin)
			if err != nil {
				return false, err
			}
			in := slices.ContainsFunc(ms, func(m storage.Membership) bool { return serverOf(m.UserID) == sv.server })
			sv.now = &in
		}
		return *sv.now, nil
	}
	if e.StateGroup == 0 {
		// An outlier (auth or state event held outside the timeline): the room's members see it.
		return joinedNow()
	}
	state, err := sv.c.StateGroup(ctx, e.StateGroup)
	if err != nil {
		return false, err
	}
	var ids []string
	hvID := state[storage.StateKey{Type: "m.room.history_visibility"}]
	if hvID != "" {
		ids = append(ids, hvID)
	}
	suffix := ":" + sv.server
	for k, id := range state {
		if k.Type == TypeMember && strings.HasSuffix(k.StateKey, suffix) {
			ids = append(ids, id)
		}
	}
	evs, err := sv.c.Events(ctx, ids)
	if err != nil {
		return false, err
	}
	visibility := VisibilityShared
	joined, invited := false, false
	for _, ev := range evs {
		switch {
		case ev.EventID == hvID:
			visibility = normaliseVisibility(historyVisibility(ev.ClientJSON))
		case ev.Membership == MembershipJoin:
			joined = true
		case ev.Membership == MembershipInvite:
			invited = true
		}
	}
	switch visibility {
	case VisibilityWorldReadable:
		return true, nil
	case VisibilityJoined:
		return joined, nil
	case VisibilityInvited:
		return joined || invited, nil
	}
	if joined || invited {
		return true, nil
	}
	return joinedNow()
}
