package room

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The state before a received event (step 5 of the checks on receipt), state resolution of
// diverging branches, and the room's current state after it moved.

// stateView is the state before a received event.
type stateView struct {
	// current: the state before the event is the room's current state (its prev events are the
	// forward extremities); ids is nil then, and rs.state holds the events.
	current bool
	ids     storage.StateMap
	// base is a stored state group close to ids (0 for none), for storing the state after the
	// event as a delta; baseIDs is its content.
	base    int64
	baseIDs storage.StateMap
}

// stateBefore works out the state before p: the current state if p's prev events are the forward
// extremities; the state after its prev event, or their resolved states; or StateBefore.
func (t *txn) stateBefore(rs *roomState, p *event.PDU, given storage.StateMap, metas map[string]storage.EventMeta) (stateView, error) {
	if given == nil && len(rs.extremities) > 0 && sameSet(p.PrevEvents, rs.extremities) {
		if err := t.ensureGroup(rs); err != nil {
			return stateView{}, err
		}
		return stateView{current: true, base: rs.group}, nil
	}
	known := true
	var groups []int64
	for _, id := range p.PrevEvents {
		m, ok := metas[id]
		if !ok || m.Outlier {
			known = false
			break
		}
		if !slices.Contains(groups, m.StateGroup) {
			groups = append(groups, m.StateGroup)
		}
	}
	if given != nil || !known || len(p.PrevEvents) == 0 {
		if given == nil {
			return stateView{}, ErrMissingPrevEvents
		}
		return stateView{ids: given}, nil
	}
	states := make([]storage.StateMap, len(groups))
	for i, g := range groups {
		var err error
		if states[i], err = t.c.StateGroup(t.ctx, g); err != nil {
			return stateView{}, err
		}
	}
	ids, err := t.resolve(rs.version, states)
	if err != nil {
		return stateView{}, err
	}
	return stateView{ids: ids, base: groups[0], baseIDs: states[0]}, nil
}

// lookupIn makes a StateLookup over the keys of state ids the auth rules ask about for p.
func (t *txn) lookupIn(rs *roomState, p *event.PDU, ids storage.StateMap) (StateLookup, error) {
	if ids == nil {
		return rs.lookup(), nil
	}
	keys := append(AuthEventsNeeded(rs.version, p), StateKeyTuple{TypeCreate, ""})
	m := make(map[StateKeyTuple]*event.PDU, len(keys))
	var need []string
	for _, k := range keys {
		id := ids[storage.StateKey(k)]
		if id == "" {
			continue
		}
		if ev := rs.state[k]; ev != nil && ev.EventID == id {
			m[k] = ev
			continue
		}
		need = append(need, id)
	}
	if len(need) > 0 {
		evs, err := t.loadPDUs(rs.version, need)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if id := ids[storage.StateKey(k)]; id != "" && m[k] == nil {
				if evs[id] == nil {
					return nil, ErrMissingAuthEvents
				}
				m[k] = evs[id]
			}
		}
	}
	return StateFromMap(m), nil
}

// resolve merges states: nothing to do when they agree, state resolution otherwise.
func (t *txn) resolve(v event.Version, states []storage.StateMap) (storage.StateMap, error) {
	if err := t.flushReceived(); err != nil {
		return nil, err
	}
	return t.s.resolveWith(t.ctx, t.c, v, states)
}

// resolveWith is resolve reading events through c.
func (s *Service) resolveWith(ctx context.Context, c storage.Conn, v event.Version, states []storage.StateMap) (storage.StateMap, error) {
	if len(states) == 1 || allEqual(states) {
		return states[0], nil
	}
	if s.opts.Resolve == nil {
		return nil, errors.New("room: state resolution is not configured (Options.Resolve)")
	}
	cache := map[string]*event.PDU{}
	rejectedIDs := map[string]bool{}
	fetch := func(ctx context.Context, id string) (*event.PDU, error) {
		if p, ok := cache[id]; ok {
			return p, nil
		}
		e, err := c.Event(ctx, id)
		if errors.Is(err, storage.ErrNotFound) {
			cache[id] = nil
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		p, err := event.Parse(v, e.PDU)
		if err != nil {
			return nil, err
		}
		cache[id], rejectedIDs[id] = p, e.Rejected
		return p, nil
	}
	return s.opts.Resolve(ctx, v, states, fetch, func(id string) bool { return rejectedIDs[id] })
}

func allEqual(states []storage.StateMap) bool {
	for _, s := range states[1:] {
		if !maps.Equal(s, states[0]) {
			return false
		}
	}
	return true
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// group stores ids as a state group, a delta over base when there is one, and returns it (base
// itself when nothing differs).
func (t *txn) group(roomID string, base int64, baseIDs, ids storage.StateMap) (int64, error) {
	delta := storage.StateMap{}
	for k, id := range ids {
		if baseIDs[k] != id {
			delta[k] = id
		}
	}
	for k := range baseIDs {
		if _, ok := ids[k]; !ok {
			delta[k] = ""
		}
	}
	if base != 0 && len(delta) == 0 {
		return base, nil
	}
	return t.c.CreateStateGroup(t.ctx, roomID, base, delta, ids)
}

// currentIDs is the room's current state by ID.
func (rs *roomState) currentIDs() storage.StateMap {
	m := make(storage.StateMap, len(rs.state))
	for k, ev := range rs.state {
		m[storage.StateKey(k)] = ev.EventID
	}
	return m
}

// setCurrentState replaces the room's current state with cur: the rows that differ are written
// (at stream position pos, a few rows per statement) and rs.state is updated. The events come
// from the job's parsed events (t.parsed: the state of a room just joined) or from storage.
func (t *txn) setCurrentState(rs *roomState, cur storage.StateMap, pos int64) error {
	var need []string
	for k, id := range cur {
		if ev := rs.state[StateKeyTuple(k)]; ev == nil || ev.EventID != id {
			need = append(need, id)
		}
	}
	evs, err := t.loadPDUs(rs.version, need)
	if err != nil {
		return err
	}
	rows := make([]storage.CurrentStateRow, 0, len(need))
	changed := make(map[StateKeyTuple]*event.PDU, len(need))
	for k, id := range cur {
		tk := StateKeyTuple(k)
		if ev := rs.state[tk]; ev != nil && ev.EventID == id {
			continue
		}
		ev := evs[id]
		if ev == nil {
			return fmt.Errorf("room %s: state event %s is not stored", rs.roomID, id)
		}
		var membership string
		if ev.Type == TypeMember {
			membership = Membership(ev)
		}
		rows = append(rows, storage.CurrentStateRow{Key: k, EventID: id, Membership: membership})
		changed[tk] = ev
	}
	var removed []StateKeyTuple
	for k := range rs.state {
		if _, ok := cur[storage.StateKey(k)]; !ok {
			rows = append(rows, storage.CurrentStateRow{Key: storage.StateKey(k)})
			removed = append(removed, k)
		}
	}
	if err := t.c.SetCurrentStates(t.ctx, rs.roomID, rows, pos); err != nil {
		return err
	}
	maps.Copy(rs.state, changed)
	for _, k := range removed {
		delete(rs.state, k)
	}
	return nil
}
