package room

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Reading rooms. Every read path goes through a viewer, so a user never gets an event that
// history visibility and their membership hide from them.

// Reader identifies who reads: the user, and the device (to show transaction IDs of its own
// sends).
type Reader struct {
	UserID   string
	DeviceID string
}

// Page is a page of /messages.
type Page struct {
	Chunk []json.RawMessage
	Start string
	End   string // "" when there are no more events in that direction
	State []json.RawMessage
}

// Token formats: "t<depth>_<stream>" is a boundary in topological order; "s<stream>" is a
// stream position (sync's next_batch / prev_batch), converted per room.
func topoToken(p storage.TopoPos) string { return fmt.Sprintf("t%d_%d", p.Depth, p.Stream) }

func (s *Service) parseToken(ctx context.Context, c storage.Conn, roomID, tok string) (storage.TopoPos, error) {
	bad := spec.ErrInvalidParam.Withf("Invalid pagination token %q", tok)
	switch {
	case strings.HasPrefix(tok, "t"):
		d, st, ok := strings.Cut(tok[1:], "_")
		depth, err1 := strconv.ParseInt(d, 10, 64)
		stream, err2 := strconv.ParseInt(st, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return storage.TopoPos{}, bad
		}
		return storage.TopoPos{Depth: depth, Stream: stream}, nil
	case strings.HasPrefix(tok, "s"):
		// A /sync next_batch ("s<events>_<other streams>...") names the events position first.
		ev, _, _ := strings.Cut(tok[1:], "_")
		pos, err := strconv.ParseInt(ev, 10, 64)
		if err != nil {
			return storage.TopoPos{}, bad
		}
		return c.TopoOfStream(ctx, roomID, pos)
	}
	return storage.TopoPos{}, bad
}

// EventFilter selects timeline events (the subset of the spec's RoomEventFilter /messages uses).
type EventFilter struct {
	Types, NotTypes     []string
	Senders, NotSenders []string
	LazyLoadMembers     bool
}

func (f *EventFilter) match(e *storage.Event) bool {
	if f == nil {
		return true
	}
	if f.Types != nil && !matchAny(f.Types, e.Type) || matchAny(f.NotTypes, e.Type) {
		return false
	}
	if f.Senders != nil && !contains(f.Senders, e.Sender) || contains(f.NotSenders, e.Sender) {
		return false
	}
	return true
}

// matchAny matches event types with the filter's trailing "*" wildcard.
func matchAny(patterns []string, typ string) bool {
	for _, p := range patterns {
		if p == typ || strings.HasSuffix(p, "*") && strings.HasPrefix(typ, strings.TrimSuffix(p, "*")) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// maxScan bounds how many rows one /messages call reads while skipping hidden events.
const maxScan = 2000

// Messages is GET /rooms/{roomId}/messages: up to limit visible events from the boundary from
// ("" = the newest end for backward, the oldest for forward), stopping at to if given.
func (s *Service) Messages(ctx context.Context, r Reader, roomID, from, to string, backward bool, limit int, f *EventFilter) (Page, error) {
	c := s.store.Read()
	v, err := s.readable(ctx, c, roomID, r.UserID)
	if err != nil {
		return Page{}, err
	}
	pos := storage.MaxTopo
	if !backward {
		pos = storage.MinTopo
	}
	if from != "" {
		if pos, err = s.parseToken(ctx, c, roomID, from); err != nil {
			return Page{}, err
		}
	}
	var stop *storage.TopoPos
	if to != "" {
		tp, err := s.parseToken(ctx, c, roomID, to)
		if err != nil {
			return Page{}, err
		}
		stop = &tp
	}
	page := Page{Start: topoToken(pos)}
	var picked []storage.Event
	scanned, exhausted, backfills := 0, false, 0
	pv := newPastView(c, v)
	for len(picked) < limit && scanned < maxScan && !exhausted {
		want := limit + 1
		batch, err := c.TimelineEvents(ctx, roomID, pos, backward, want)
		if err != nil {
			return Page{}, err
		}
		consumed := 0
		for i := range batch {
			e := &batch[i]
			key := storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}
			if stop != nil && (backward && !after(key, *stop) || !backward && after(key, *stop)) {
				exhausted = true
				break
			}
			consumed++
			scanned++
			if backward {
				pos = key.Before()
			} else {
				pos = key
			}
			if ok, err := pv.canSee(ctx, e); err != nil {
				return Page{}, err
			} else if ok && f.match(e) {
				picked = append(picked, *e)
				if len(picked) == limit {
					break
				}
			}
		}
		if len(batch) < want && consumed == len(batch) {
			exhausted = true // the timeline ends within this batch and all of it was read
		}
		// At the oldest event held: fetch older ones from other servers (backfill.go) and read on.
		if exhausted && backward && stop == nil && len(picked) < limit && backfills < maxBackfillRounds && s.backfillMore(ctx, roomID) {
			exhausted = false
			backfills++
		}
	}
	if !exhausted {
		page.End = topoToken(pos)
	}
	page.Chunk, err = s.clientEvents(ctx, c, r, picked)
	if err != nil {
		return Page{}, err
	}
	if f != nil && f.LazyLoadMembers {
		page.State, err = s.memberEventsFor(ctx, c, roomID, picked)
		if err != nil {
			return Page{}, err
		}
	}
	return page, nil
}

// after reports whether event key k lies after boundary b.
func after(k, b storage.TopoPos) bool {
	return k.Depth > b.Depth || k.Depth == b.Depth && k.Stream > b.Stream
}

// readable loads the viewer of a room for a user and refuses users who may see nothing at all.
func (s *Service) readable(ctx context.Context, c storage.Conn, roomID, userID string) (*viewer, error) {
	if _, err := c.Room(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return nil, spec.ErrForbidden.With("You are not a member of this room")
	} else if err != nil {
		return nil, err
	}
	v, err := loadViewer(ctx, c, roomID, userID)
	if err != nil {
		return nil, err
	}
	if !v.everInRoom() && !v.worldReadableNow() {
		return nil, spec.ErrForbidden.With("You are not a member of this room")
	}
	if v.current() != MembershipJoin && !v.worldReadableNow() {
		// A user who forgot a room they left may no longer read it.
		forgot, err := c.RoomForgotten(ctx, userID, roomID)
		if err != nil {
			return nil, err
		}
		if forgot {
			return nil, spec.ErrForbidden.With("You forgot this room")
		}
	}
	return v, nil
}

// memberEventsFor returns the current member events of the senders of evs (lazy-loaded members).
func (s *Service) memberEventsFor(ctx context.Context, c storage.Conn, roomID string, evs []storage.Event) ([]json.RawMessage, error) {
	seen := map[string]bool{}
	var ids []string
	for _, e := range evs {
		if seen[e.Sender] {
			continue
		}
		seen[e.Sender] = true
		id, err := c.CurrentStateEvent(ctx, roomID, TypeMember, e.Sender)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	members, err := c.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(members))
	for _, m := range members {
		out = append(out, m.ClientJSON)
	}
	return out, nil
}

// Event is GET /rooms/{roomId}/event/{eventId}.
func (s *Service) Event(ctx context.Context, r Reader, roomID, eventID string) (json.RawMessage, error) {
	c := s.store.Read()
	v, err := s.readable(ctx, c, roomID, r.UserID)
	if err != nil {
		return nil, err
	}
	e, err := c.Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (e.RoomID != roomID || e.StreamPos == 0 || e.Rejected || e.StreamPos > 0 && !v.canSee(&e)) {
		return nil, spec.ErrNotFound.With("Event not found")
	}
	if err != nil {
		return nil, err
	}
	if e.StreamPos < 0 { // backfilled: the state stored with it decides (backfill.go)
		if ok, err := newPastView(c, v).canSee(ctx, &e); err != nil {
			return nil, err
		} else if !ok {
			return nil, spec.ErrNotFound.With("Event not found")
		}
	}
	out, err := s.clientEvents(ctx, c, r, []storage.Event{e})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// Context is GET /rooms/{roomId}/context/{eventId}: the event with up to limit visible events
// around it, split evenly before and after.
func (s *Service) Context(ctx context.Context, r Reader, roomID, eventID string, limit int, f *EventFilter) (map[string]any, error) {
	c := s.store.Read()
	evJSON, err := s.Event(ctx, r, roomID, eventID)
	if err != nil {
		return nil, err
	}
	e, err := c.Event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	key := storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}
	beforeN := limit / 2
	afterN := limit - beforeN
	var before, afterPage Page
	if beforeN > 0 {
		if before, err = s.Messages(ctx, r, roomID, topoToken(key.Before()), "", true, beforeN, f); err != nil {
			return nil, err
		}
	} else {
		before.End = topoToken(key.Before())
	}
	if afterN > 0 {
		if afterPage, err = s.Messages(ctx, r, roomID, topoToken(key), "", false, afterN, f); err != nil {
			return nil, err
		}
	} else {
		afterPage.End = topoToken(key)
	}
	start, end := before.End, afterPage.End
	if start == "" {
		start = topoToken(storage.MinTopo)
	}
	if end == "" {
		last, err := c.TopoOfStream(ctx, roomID, 1<<62)
		if err != nil {
			return nil, err
		}
		end = topoToken(last)
	}
	state, err := s.memberEventsFor(ctx, c, roomID, []storage.Event{e})
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"event": evJSON, "events_before": nonNil(before.Chunk), "events_after": nonNil(afterPage.Chunk),
		"start": start, "end": end, "state": nonNil(state),
	}, nil
}

func nonNil(list []json.RawMessage) []json.RawMessage {
	if list == nil {
		return []json.RawMessage{}
	}
	return list
}

// stateFor returns the room state a user may read: the current state while joined (or when the
// room is world_readable), the state at their leave/kick/ban event after they left, nothing
// otherwise.
func (s *Service) stateFor(ctx context.Context, c storage.Conn, roomID, userID string) (storage.StateMap, error) {
	v, err := s.readable(ctx, c, roomID, userID)
	if err != nil {
		return nil, err
	}
	if v.current() == MembershipJoin || v.worldReadableNow() {
		return c.CurrentState(ctx, roomID)
	}
	if v.current() == MembershipLeave || v.current() == MembershipBan {
		id, err := c.CurrentStateEvent(ctx, roomID, TypeMember, userID)
		if err != nil {
			return nil, err
		}
		e, err := c.Event(ctx, id)
		if err != nil {
			return nil, err
		}
		return c.StateGroup(ctx, e.StateGroup)
	}
	return nil, spec.ErrForbidden.With("You are not a member of this room")
}

// State is GET /rooms/{roomId}/state.
func (s *Service) State(ctx context.Context, r Reader, roomID string) ([]json.RawMessage, error) {
	c := s.store.Read()
	st, err := s.stateFor(ctx, c, roomID, r.UserID)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(st))
	for _, id := range st {
		ids = append(ids, id)
	}
	evs, err := c.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	return s.clientEvents(ctx, c, r, evs)
}

// StateEvent is GET /rooms/{roomId}/state/{type}/{stateKey}: the event's content, or with full
// (?format=event) the whole client event.
func (s *Service) StateEvent(ctx context.Context, r Reader, roomID, typ, stateKey string, full bool) (json.RawMessage, error) {
	c := s.store.Read()
	st, err := s.stateFor(ctx, c, roomID, r.UserID)
	if err != nil {
		return nil, err
	}
	id, ok := st[storage.StateKey{Type: typ, StateKey: stateKey}]
	if !ok {
		return nil, spec.ErrNotFound.With("Event not found")
	}
	e, err := c.Event(ctx, id)
	if err != nil {
		return nil, err
	}
	if full {
		out, err := s.clientEvents(ctx, c, r, []storage.Event{e})
		if err != nil {
			return nil, err
		}
		return out[0], nil
	}
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(e.ClientJSON, &ev); err != nil {
		return nil, err
	}
	return ev.Content, nil
}

// Members is GET /rooms/{roomId}/members: member events of the current state (or of the state at
// the caller's leave), filtered by membership / not_membership.
func (s *Service) Members(ctx context.Context, r Reader, roomID, at, membership, notMembership string) ([]json.RawMessage, error) {
	c := s.store.Read()
	st, err := s.stateFor(ctx, c, roomID, r.UserID)
	if err != nil {
		return nil, err
	}
	if at != "" {
		pos, err := s.parseToken(ctx, c, roomID, at)
		if err != nil {
			return nil, err
		}
		if st, err = s.stateAtTopo(ctx, c, roomID, r.UserID, pos); err != nil {
			return nil, err
		}
	}
	var ids []string
	for k, id := range st {
		if k.Type == TypeMember {
			ids = append(ids, id)
		}
	}
	evs, err := c.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	var keep []storage.Event
	for _, e := range evs {
		if membership != "" && e.Membership != membership || notMembership != "" && e.Membership == notMembership {
			continue
		}
		keep = append(keep, e)
	}
	return s.clientEvents(ctx, c, r, keep)
}

// stateAtTopo is the state after the last timeline event at or before a boundary. The user must be
// allowed to see that event: a token from after they left (or before they could see the room)
// does not show them the room's state at that point.
func (s *Service) stateAtTopo(ctx context.Context, c storage.Conn, roomID, userID string, pos storage.TopoPos) (storage.StateMap, error) {
	evs, err := c.TimelineEvents(ctx, roomID, pos, true, 1)
	if err != nil || len(evs) == 0 {
		return storage.StateMap{}, err
	}
	v, err := loadViewer(ctx, c, roomID, userID)
	if err != nil {
		return nil, err
	}
	if !v.canSee(&evs[0]) {
		return nil, spec.ErrForbidden.With("You may not see the room at that point")
	}
	return c.StateGroup(ctx, evs[0].StateGroup)
}

// Member is one entry of /joined_members.
type Member struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// JoinedMembers is GET /rooms/{roomId}/joined_members (joined users only may ask).
func (s *Service) JoinedMembers(ctx context.Context, r Reader, roomID string) (map[string]Member, error) {
	c := s.store.Read()
	v, err := s.readable(ctx, c, roomID, r.UserID)
	if err != nil {
		return nil, err
	}
	if v.current() != MembershipJoin && !v.worldReadableNow() {
		return nil, spec.ErrForbidden.With("You are not joined to this room")
	}
	ms, err := c.RoomMembers(ctx, roomID, MembershipJoin)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.EventID
	}
	evs, err := c.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Member, len(evs))
	for _, e := range evs {
		var ev struct {
			Content struct {
				DisplayName *string `json:"displayname"`
				AvatarURL   *string `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(e.ClientJSON, &ev)
		out[*e.StateKey] = Member{DisplayName: ev.Content.DisplayName, AvatarURL: ev.Content.AvatarURL}
	}
	return out, nil
}

// JoinedRooms is GET /joined_rooms.
func (s *Service) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	ms, err := s.store.Read().RoomsOfUser(ctx, userID, MembershipJoin)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.RoomID
	}
	return out, nil
}
