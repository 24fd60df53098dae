package room

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Receiving events from other servers: steps 4 to 6 of "Checks performed on receipt of a PDU"
// (server-server API) and persisting the outcome, as writer jobs. Steps 1 to 3 (format, signatures,
// content hash) and fetching what is missing need the network and are the caller's
// (federation/receive.go); here nothing waits on another server:
//
//	federation: parse, verify signatures, hash (redact on mismatch) ─▶ ReceivePDUs (one writer job)
//	   ▲                                                                 │ per event, in order:
//	   │                                                                 │  4. auth against its auth_events
//	   └── ErrMissingAuthEvents / ErrMissingPrevEvents: fetch them,     │  5. auth against the state before it
//	       then call again (StateBefore when prev events stay missing)   │  6. auth against current state (soft fail)
//	                                                                     ▼  store, move extremities and state
//
// A rejected event is stored (rejected, without a stream position) so that it is not processed
// again and events citing it as an auth event are rejected too; its state group is the state
// before it, which is what its successors inherit from it. A soft-failed event is stored with a
// stream position but stays out of /sync, the forward extremities and the current state.

// ResolveFunc resolves diverging room states (state resolution v2 and v2.1: package stateres,
// which imports this package). fetch returns a stored event by ID (nil, nil when there is none);
// rejected reports the events rejected on receipt.
type ResolveFunc func(ctx context.Context, v event.Version, states []storage.StateMap,
	fetch func(ctx context.Context, eventID string) (*event.PDU, error), rejected func(eventID string) bool) (storage.StateMap, error)

var (
	// ErrMissingAuthEvents: an event's auth events (or the events of a given StateBefore) are not
	// stored, so it was not processed. Fetch them and try again.
	ErrMissingAuthEvents = errors.New("room: auth events of the event are not stored")
	// ErrMissingPrevEvents: an event's prev events are not stored (or only as outliers, whose
	// state is unknown), and no StateBefore was given. Fetch them, or the state before the event.
	ErrMissingPrevEvents = errors.New("room: prev events of the event are not stored")
)

// RejectedError is the reason a received event was rejected.
type RejectedError struct {
	EventID string
	Reason  string
}

func (e *RejectedError) Error() string { return "event " + e.EventID + " rejected: " + e.Reason }

func rejected(p *event.PDU, format string, args ...any) *RejectedError {
	return &RejectedError{EventID: p.EventID, Reason: fmt.Sprintf(format, args...)}
}

// Incoming is an event received from another server, with its signatures and content hash
// checked (and redacted if the hash did not match).
type Incoming struct {
	PDU *event.PDU
	// StateBefore is the state before the event as another server reported it (/state_ids), for an
	// event whose prev events this server does not have; every event it names must be stored.
	StateBefore storage.StateMap
	// Relay queues the accepted event for the room's other servers except those in RelayExcept:
	// for a membership event this server accepted as the resident server (send_join, send_leave),
	// which only the origin has sent.
	Relay       bool
	RelayExcept []string
}

// Outcome is what happened to one received event.
type Outcome struct {
	EventID string
	// Err is nil when the event is stored (accepted or soft-failed, or already stored before); a
	// *RejectedError when it was rejected (and stored as such); ErrMissingAuthEvents or
	// ErrMissingPrevEvents when nothing was stored.
	Err        error
	SoftFailed bool
	// Duplicate: the event was stored before this call.
	Duplicate bool
}

// ReceivePDUs processes events of one room received from other servers, in the order given, in
// one writer job (a batch of a /send transaction costs one transaction, whatever its size).
func (s *Service) ReceivePDUs(ctx context.Context, roomID string, in []Incoming) ([]Outcome, error) {
	out := make([]Outcome, len(in))
	err := s.write(ctx, func(t *txn) error {
		rs, err := t.startReceiving(roomID, in)
		if err != nil {
			return err
		}
		for i, inc := range in {
			if out[i], err = t.receive(rs, inc); err != nil {
				return err
			}
		}
		return t.flushReceived()
	})
	return out, err
}

// received is what a ReceivePDUs job keeps across its events: the metadata of the events they
// name (read with one query for the whole job, then kept up to date), and the rows of the events
// it accepted, written with one statement per table when the job ends or before anything reads
// events back (flushReceived).
type received struct {
	metas   map[string]storage.EventMeta
	queried map[string]bool
	rows    []storage.Event
}

// metas returns the metadata of the stored events among ids (and possibly others).
func (t *txn) metas(ids []string) (map[string]storage.EventMeta, error) {
	if t.recv == nil {
		return t.c.EventMetas(t.ctx, ids)
	}
	var ask []string
	for _, id := range ids {
		if !t.recv.queried[id] {
			t.recv.queried[id] = true
			ask = append(ask, id)
		}
	}
	if len(ask) > 0 {
		found, err := t.c.EventMetas(t.ctx, ask)
		if err != nil {
			return nil, err
		}
		for id, m := range found {
			t.recv.metas[id] = m
		}
	}
	return t.recv.metas, nil
}

// insertReceived stores a received event's row (buffered within ReceivePDUs).
func (t *txn) insertReceived(row storage.Event) error {
	if t.recv == nil {
		return t.c.InsertEvent(t.ctx, row)
	}
	t.recv.rows = append(t.recv.rows, row)
	t.recv.queried[row.EventID] = true
	t.recv.metas[row.EventID] = storage.EventMeta{EventID: row.EventID, Outlier: row.Outlier, Rejected: row.Rejected,
		StateGroup: row.StateGroup, Depth: row.Depth}
	return nil
}

// flushReceived writes the buffered rows.
func (t *txn) flushReceived() error {
	if t.recv == nil || len(t.recv.rows) == 0 {
		return nil
	}
	// Statements of a few rows each: the SQLite driver looks every bound parameter up by name
	// through a list as long as the statement's parameters, so its cost grows with their square.
	const rowsPerStatement = 8
	rows := t.recv.rows
	t.recv.rows = t.recv.rows[:0]
	for len(rows) > 0 {
		n := min(len(rows), rowsPerStatement)
		if err := t.c.InsertEvents(t.ctx, rows[:n]); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// ReceiveOutliers stores events of a room that are not part of its timeline: auth events fetched
// for an event, the state and auth chain of a room being joined. Each is checked against its own
// auth events (which must be among pdus or stored) and stored as rejected if it fails. The room
// need not be known yet.
func (s *Service) ReceiveOutliers(ctx context.Context, roomID string, v event.Version, pdus []*event.PDU) ([]Outcome, error) {
	var out []Outcome
	err := s.write(ctx, func(t *txn) error {
		var err error
		out, err = t.storeOutliers(roomID, v, pdus)
		return err
	})
	return out, err
}

// receivedRow is the stored row of p, an event of roomID received from another server, at stream
// position pos in state group group.
func receivedRow(roomID string, p *event.PDU, pos, group int64, rejected bool) storage.Event {
	var membership string
	if p.Type == TypeMember {
		membership = Membership(p)
	}
	rel := relationOf(p.Content)
	return storage.Event{
		EventID: p.EventID, RoomID: roomID, Type: p.Type, StateKey: p.StateKey, Sender: p.Sender,
		Depth: p.Depth, OriginServerTS: p.OriginServerTS, StreamPos: pos, StateGroup: group, Membership: membership,
		Rejected: rejected, RelatesTo: rel.EventID, RelType: rel.RelType, RelKey: rel.Key,
		PDU: p.Raw, ClientJSON: p.ClientJSON(nil), PrevEvents: p.PrevEvents,
	}
}

// startReceiving opens roomID for a batch of events received from other servers: the room's
// state, and one query for what is stored of the events and of every event they cite.
func (t *txn) startReceiving(roomID string, in []Incoming) (*roomState, error) {
	rs, err := t.room(roomID)
	if err != nil {
		return nil, err
	}
	t.recv = &received{metas: map[string]storage.EventMeta{}, queried: map[string]bool{}}
	var ids []string
	for _, inc := range in {
		ids = append(append(append(ids, inc.PDU.EventID), inc.PDU.AuthEvents...), inc.PDU.PrevEvents...)
	}
	if _, err := t.metas(ids); err != nil {
		return nil, err
	}
	return rs, nil
}

// receive is steps 4 to 6 and the persisting of one event.
func (t *txn) receive(rs *roomState, inc Incoming) (Outcome, error) {
	p, v := inc.PDU, rs.version
	o := Outcome{EventID: p.EventID}
	a, ok, err := t.admit(rs, p, &o)
	if !ok || err != nil {
		return o, err
	}
	metas, reject := a.metas, a.reject

	// Step 5: against the state before the event.
	before, err := t.stateBefore(rs, p, inc.StateBefore, metas)
	if err != nil {
		if errors.Is(err, ErrMissingAuthEvents) || errors.Is(err, ErrMissingPrevEvents) {
			o.Err = err
			return o, nil
		}
		return o, err
	}
	if reject == nil {
		lookup, err := t.lookupIn(rs, p, before.ids)
		if err != nil {
			if errors.Is(err, ErrMissingAuthEvents) {
				o.Err = err
				return o, nil
			}
			return o, err
		}
		reject = t.check(rs, p, lookup, nil)
	}

	// Step 6: against the current state (soft failure). The fast path's state before is the
	// current state: nothing more to check.
	if reject == nil && !before.current && len(rs.state) > 0 {
		if err := t.s.checker(v).Allowed(p, rs.lookup()); err != nil {
			o.SoftFailed = true
		}
	}
	return o, t.persistReceived(rs, inc, before, reject, &o, a.upgrading)
}

// admission is what receive and receivePast learn of an event before its state before: what is
// stored of it and of the events it cites, and the verdict of step 4.
type admission struct {
	metas     map[string]storage.EventMeta
	upgrading bool           // the event is stored as an outlier and becomes a timeline event
	reject    *RejectedError // step 4's rejection, if any
}

// admit checks that p is in rs's room, looks up what is stored of p and of its auth and prev
// events, and runs step 4 (the auth rules against p's auth events). ok false means o is final:
// not in the room, rejected before, a duplicate, or with auth events missing.
func (t *txn) admit(rs *roomState, p *event.PDU, o *Outcome) (a admission, ok bool, err error) {
	if p.EffectiveRoomID() != rs.roomID {
		o.Err = rejected(p, "the event is not in room %s", rs.roomID)
		return a, false, nil
	}
	a.metas, err = t.metas(append(append([]string{p.EventID}, p.AuthEvents...), p.PrevEvents...))
	if err != nil {
		return a, false, err
	}
	if m, stored := a.metas[p.EventID]; stored {
		switch {
		case m.Rejected:
			o.Err = rejected(p, "rejected before")
			return a, false, nil
		case !m.Outlier:
			o.Duplicate = true
			return a, false, nil
		}
		a.upgrading = true
	}

	// Step 4: the auth rules against the event's auth events.
	authEvs, create, err := t.authEvents(rs, p, a.metas)
	if errors.Is(err, ErrMissingAuthEvents) {
		o.Err = err
		return a, false, nil
	} else if err != nil {
		return a, false, err
	}
	for _, id := range p.AuthEvents {
		if a.metas[id].Rejected {
			a.reject = rejected(p, "auth event %s was rejected", id)
		}
	}
	if a.reject == nil {
		a.reject = t.check(rs, p, StateFromEvents(append(slices.Clone(authEvs), create)), authEvs)
	}
	return a, true, nil
}

// check runs the auth rules against a state (with authEvs, also the rules on the auth events
// list itself) and returns the rejection, if any.
func (t *txn) check(rs *roomState, p *event.PDU, lookup StateLookup, authEvs []*event.PDU) *RejectedError {
	if authEvs != nil {
		if err := CheckAuthEvents(rs.version, p, authEvs); err != nil {
			return rejected(p, "%v", err)
		}
	}
	if err := t.s.checker(rs.version).Allowed(p, lookup); err != nil {
		return rejected(p, "%v", err)
	}
	return nil
}

// authEvents loads the events p names as auth events, from the current state when they are
// there. From v12 the room's create event, which the rules need and events no longer cite, is
// returned apart (nil before v12).
func (t *txn) authEvents(rs *roomState, p *event.PDU, metas map[string]storage.EventMeta) (cited []*event.PDU, create *event.PDU, err error) {
	needed := AuthEventsNeeded(rs.version, p)
	ids := slices.Clone(p.AuthEvents)
	v12 := rs.version.RoomIDFromCreateEvent() && p.Type != TypeCreate
	if v12 {
		ids = append(ids, createEventID(p.RoomID))
	}
	found := make(map[string]*event.PDU, len(ids))
	var load []string
	for _, id := range ids {
		if ev := rs.stateByID(id, needed); ev != nil {
			found[id] = ev
			continue
		}
		if _, ok := metas[id]; !ok && !(v12 && id == createEventID(p.RoomID)) {
			return nil, nil, ErrMissingAuthEvents
		}
		load = append(load, id)
	}
	if len(load) > 0 {
		evs, err := t.loadPDUs(rs.version, load)
		if err != nil {
			return nil, nil, err
		}
		for _, id := range load {
			if evs[id] == nil {
				return nil, nil, ErrMissingAuthEvents
			}
			found[id] = evs[id]
		}
	}
	for _, id := range p.AuthEvents {
		cited = append(cited, found[id])
	}
	if v12 {
		create = found[createEventID(p.RoomID)]
	}
	return cited, create, nil
}

// createEventID is the create event's ID of a v12 room ("!x" -> "$x").
func createEventID(roomID string) string {
	if len(roomID) < 2 {
		return ""
	}
	return "$" + roomID[1:]
}

// stateByID finds an event of the current state by ID among the keys given.
func (rs *roomState) stateByID(id string, keys []StateKeyTuple) *event.PDU {
	for _, k := range keys {
		if ev := rs.state[k]; ev != nil && ev.EventID == id {
			return ev
		}
	}
	if ev := rs.state[StateKeyTuple{TypeCreate, ""}]; ev != nil && ev.EventID == id {
		return ev
	}
	return nil
}

// loadPDUs reads and parses stored events; those not stored are absent from the result. Events
// this job parsed and stored (t.parsed) are taken from there.
func (t *txn) loadPDUs(v event.Version, ids []string) (map[string]*event.PDU, error) {
	out := make(map[string]*event.PDU, len(ids))
	var read []string
	for _, id := range ids {
		if p := t.parsed[id]; p != nil {
			out[id] = p
		} else {
			read = append(read, id)
		}
	}
	if len(read) == 0 {
		return out, nil
	}
	if err := t.flushReceived(); err != nil {
		return nil, err
	}
	rows, err := t.c.Events(t.ctx, read)
	if err != nil {
		return nil, err
	}
	for _, e := range rows {
		p, err := event.Parse(v, e.PDU)
		if err != nil {
			return nil, fmt.Errorf("room: stored event %s: %w", e.EventID, err)
		}
		out[e.EventID] = p
	}
	return out, nil
}

// persistReceived stores a received event and, when accepted, moves the room forward.
func (t *txn) persistReceived(rs *roomState, inc Incoming, before stateView, reject *RejectedError, o *Outcome, upgrading bool) error {
	p := inc.PDU
	var pos int64
	if reject == nil {
		pos = t.pos.take()
	}
	// The state after the event (before it, for a rejected or non-state event).
	var group int64
	var afterIDs storage.StateMap
	var err error
	key := StateKeyTuple{}
	isState := p.StateKey != nil && reject == nil
	if isState {
		key = StateKeyTuple{p.Type, *p.StateKey}
	}
	switch {
	case before.current && !isState:
		group = rs.group
	case before.current:
		afterIDs = rs.currentIDs()
		afterIDs[storage.StateKey(key)] = p.EventID
		group, err = t.c.CreateStateGroup(t.ctx, rs.roomID, rs.group, storage.StateMap{storage.StateKey(key): p.EventID}, afterIDs)
	default:
		afterIDs = before.ids
		if isState {
			afterIDs = maps.Clone(before.ids)
			afterIDs[storage.StateKey(key)] = p.EventID
		}
		group, err = t.group(rs.roomID, before.base, before.baseIDs, afterIDs)
	}
	if err != nil {
		return err
	}
	row := receivedRow(rs.roomID, p, pos, group, reject != nil)
	row.SoftFailed = o.SoftFailed
	if upgrading {
		if err = t.flushReceived(); err == nil {
			err = t.c.UpgradeOutlier(t.ctx, row)
		}
		if t.recv != nil {
			t.recv.metas[row.EventID] = storage.EventMeta{EventID: row.EventID, Rejected: row.Rejected, StateGroup: row.StateGroup, Depth: row.Depth}
		}
	} else {
		err = t.insertReceived(row)
	}
	if err != nil {
		return err
	}
	if reject != nil {
		o.Err = reject
		return nil
	}
	rs.depth = max(rs.depth, p.Depth)
	if o.SoftFailed {
		return nil
	}

	// Forward extremities: p replaces its prev events, unless a stored event already follows it.
	ext := slices.DeleteFunc(slices.Clone(rs.extremities), func(id string) bool { return slices.Contains(p.PrevEvents, id) })
	if !before.current {
		if err := t.flushReceived(); err != nil {
			return err
		}
		if has, err := t.c.HasSuccessor(t.ctx, p.EventID); err != nil {
			return err
		} else if !has {
			ext = append(ext, p.EventID)
		}
	} else {
		ext = append(ext, p.EventID)
	}
	rs.extremities, rs.extremitiesDirty = ext, true

	// The current state: the state after p when p is the only extremity, else the resolution of
	// every extremity's state.
	switch {
	case before.current && len(ext) == 1 && ext[0] == p.EventID:
		if isState {
			if err := t.c.SetCurrentState(t.ctx, rs.roomID, storage.StateKey(key), p.EventID, row.Membership, pos); err != nil {
				return err
			}
			rs.state[key] = p
		}
		rs.group = group
	default:
		if afterIDs == nil {
			if afterIDs, err = t.c.StateGroup(t.ctx, group); err != nil {
				return err
			}
		}
		cur, curGroup := afterIDs, group
		if len(ext) != 1 || ext[0] != p.EventID {
			states := []storage.StateMap{afterIDs}
			metas, err := t.metas(ext)
			if err != nil {
				return err
			}
			for _, id := range ext {
				if id == p.EventID || metas[id].StateGroup == 0 {
					continue
				}
				st, err := t.c.StateGroup(t.ctx, metas[id].StateGroup)
				if err != nil {
					return err
				}
				states = append(states, st)
			}
			if cur, err = t.resolve(rs.version, states); err != nil {
				return err
			}
			if curGroup, err = t.group(rs.roomID, group, afterIDs, cur); err != nil {
				return err
			}
		}
		if err := t.setCurrentState(rs, cur, pos); err != nil {
			return err
		}
		rs.group = curGroup
	}
	if p.Type == TypeMember || !before.current {
		rs.servers = serversOf(rs.state, t.s.opts.ServerName)
	}
	t.notices = append(t.notices, notice{RoomID: rs.roomID, Pos: pos})
	if p.Type == TypeRedaction {
		if err := t.flushReceived(); err != nil {
			return err
		}
		delete(t.parsed, p.RedactsID()) // its stored form may change now
		if err := t.applyRedaction(rs, p, p.RedactsID()); err != nil && !errors.Is(err, spec.ErrForbidden) {
			return err
		}
	}
	if inc.Relay {
		return t.queueOutbound(t.destinations(rs, p, inc.RelayExcept...), p, pos)
	}
	return nil
}
