// Package stateres is state resolution v2 (room versions 2 to 11) and v2.1 (room version 12+),
// one file per step of the algorithm in the spec (rooms/v2 "State resolution", rooms/v12):
//
//	conflicted.go  unconflicted state map, conflicted state set, auth difference, conflicted
//	               state subgraph (v2.1), full conflicted set
//	powersort.go   power events and the reverse topological power ordering (step 1)
//	iterative.go   iterative auth checks (steps 2 and 4)
//	mainline.go    mainline ordering (step 3)
//	resolve.go     the algorithm, steps 1 to 5
//
// Events are read through a FetchFunc and cached for the length of one resolution; everything a
// step needs about an event (its power level, mainline position, auth chain) is computed once,
// and the auth rules run through one room.Checker, which parses each power levels, create,
// membership and join rules event once.
//
// Where the spec's text and the deployed implementations part, this package follows the network
// and says so where it does: the auth difference counts each state's own events as reachable
// from it (conflicted.go), and power events are the power levels and join rules events with the
// empty state key (powersort.go).
package stateres

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// StateMap is a room state: (event type, state key) to event ID.
type StateMap map[room.StateKeyTuple]string

// FetchFunc returns an event by ID, rejected or not. For an event it does not have it returns an
// error matching ErrEventNotFound (or nil, nil): such events are left out, as the spec's algorithm
// only uses events the server has.
type FetchFunc func(ctx context.Context, eventID string) (*event.PDU, error)

// AuthChainFunc returns the union of the auth chains of the given events: every event reachable
// from them through auth_events, not including the given events themselves unless reachable.
// Storage with an auth chain index supplies one; without it Resolve walks auth_events through
// FetchFunc.
type AuthChainFunc func(ctx context.Context, eventIDs []string) ([]string, error)

// ErrEventNotFound is what a FetchFunc returns for an event it does not have.
var ErrEventNotFound = errors.New("event not found")

// Resolve resolves the states of a room of version v (state resolution v2, or v2.1 from v12) and
// returns the resolved state. authChain may be nil. See Resolver for more options.
func Resolve(ctx context.Context, v event.Version, states []StateMap, authChain AuthChainFunc, fetch FetchFunc) (StateMap, error) {
	r := Resolver{Version: v, Fetch: fetch, AuthChain: authChain}
	return r.Resolve(ctx, states)
}

// Resolver is state resolution with all its inputs. Only Version and Fetch are required.
type Resolver struct {
	Version event.Version
	Fetch   FetchFunc
	// AuthChain computes auth chains; nil walks auth_events through Fetch.
	AuthChain AuthChainFunc
	// IsRejected reports whether an event was rejected; the iterative auth checks do not fall back
	// to rejected auth events. nil means none is.
	IsRejected func(eventID string) bool
	// VerifyJoinAuthorisedVia is passed to the auth rules (see room.Allowed); nil only requires a
	// signature from the authorising server to be present, as events in state were verified on
	// receipt.
	VerifyJoinAuthorisedVia func(ev *event.PDU, server string) error
}

// Resolve resolves states; see the package-level Resolve.
func (r *Resolver) Resolve(ctx context.Context, states []StateMap) (StateMap, error) {
	if r.Fetch == nil {
		return nil, errors.New("stateres: no FetchFunc")
	}
	if !r.Version.Known() {
		return nil, errors.New("stateres: unknown room version")
	}
	switch len(states) {
	case 0:
		return StateMap{}, nil
	case 1:
		return maps.Clone(states[0]), nil
	}

	// The unconflicted state map and the conflicted state set.
	unconflicted, conflicted := separate(states)
	if len(conflicted) == 0 {
		return unconflicted, nil
	}

	s, err := r.newResolution(ctx, states)
	if err != nil {
		return nil, err
	}

	// The full conflicted set: conflicted state, auth difference and (v2.1) the conflicted state
	// subgraph.
	full, err := s.fullConflictedSet(states, unconflicted, conflicted)
	if err != nil {
		return nil, err
	}

	// Step 1: the power events of the full conflicted set and the events of their auth chains
	// that are in it, in reverse topological power ordering.
	powerOrder, inPowerSet, err := s.powerEvents(full)
	if err != nil {
		return nil, err
	}

	// Step 2: iterative auth checks from the unconflicted state (v2) or the empty state (v2.1).
	partial := newPartialState(unconflicted)
	if r.Version.StateResV21() {
		partial = newPartialState(nil)
	}
	if err := s.iterativeAuthChecks(partial, powerOrder); err != nil {
		return nil, err
	}

	// Step 3: the other events in mainline order of the resolved power levels.
	var rest []*event.PDU
	for _, ev := range full {
		if !inPowerSet[ev.EventID] {
			rest = append(rest, ev)
		}
	}
	rest, err = s.mainlineOrder(rest, partial.get(room.StateKeyTuple{Type: room.TypePowerLevels}))
	if err != nil {
		return nil, err
	}

	// Step 4: iterative auth checks of those on top of the partially resolved state.
	if err := s.iterativeAuthChecks(partial, rest); err != nil {
		return nil, err
	}

	// Step 5: the unconflicted state map wins.
	out := make(StateMap, len(unconflicted)+len(partial.changed))
	for k, id := range partial.changed {
		out[k] = id
	}
	for k, id := range unconflicted {
		out[k] = id
	}
	return out, nil
}

// resolution is one run of the algorithm: its inputs and what it has learnt about events.
type resolution struct {
	ctx     context.Context
	r       *Resolver
	v       event.Version
	roomID  string
	create  *event.PDU
	checker *room.Checker

	events map[string]*event.PDU // fetched events; nil for ones the fetcher does not have
	steps  int                   // work done, for checking ctx now and then
}

func (r *Resolver) newResolution(ctx context.Context, states []StateMap) (*resolution, error) {
	s := &resolution{
		ctx:     ctx,
		r:       r,
		v:       r.Version,
		checker: room.NewChecker(r.Version, r.VerifyJoinAuthorisedVia),
		events:  make(map[string]*event.PDU, 1024),
	}
	createKey := room.StateKeyTuple{Type: room.TypeCreate}
	createID := ""
	for _, st := range states {
		id, ok := st[createKey]
		if !ok {
			continue
		}
		if createID != "" && id != createID {
			return nil, fmt.Errorf("stateres: the states disagree on the create event (%s, %s)", createID, id)
		}
		createID = id
	}
	if createID == "" {
		return nil, errors.New("stateres: no state has an m.room.create event")
	}
	create, err := r.Fetch(ctx, createID)
	if err != nil || create == nil {
		return nil, fmt.Errorf("stateres: fetching the create event %s: %w", createID, orNotFound(err))
	}
	s.create = create
	s.roomID = room.RoomIDOf(r.Version, create)
	s.events[createID] = create
	return s, nil
}

// get returns an event, fetching it once; nil if the fetcher does not have it. Events of another
// room are an error.
func (s *resolution) get(id string) (*event.PDU, error) {
	return s.lookup(id, true)
}

// peek returns an event like get but, for one not fetched yet, without keeping it: for walks
// over many events that are not needed again.
func (s *resolution) peek(id string) (*event.PDU, error) {
	return s.lookup(id, false)
}

func (s *resolution) lookup(id string, keep bool) (*event.PDU, error) {
	if ev, ok := s.events[id]; ok {
		return ev, nil
	}
	if err := s.tick(); err != nil {
		return nil, err
	}
	ev, err := s.r.Fetch(s.ctx, id)
	if err != nil {
		if errors.Is(err, ErrEventNotFound) {
			if keep {
				s.events[id] = nil
			}
			return nil, nil
		}
		return nil, fmt.Errorf("stateres: fetching %s: %w", id, err)
	}
	if keep {
		if ev != nil && room.RoomIDOf(s.v, ev) != s.roomID {
			return nil, fmt.Errorf("stateres: event %s is in room %q, not %q", id, room.RoomIDOf(s.v, ev), s.roomID)
		}
		s.events[id] = ev
	}
	return ev, nil
}

// tick checks the context every so often.
func (s *resolution) tick() error {
	s.steps++
	if s.steps&1023 == 0 {
		return s.ctx.Err()
	}
	return nil
}

func (s *resolution) rejected(id string) bool {
	return s.r.IsRejected != nil && s.r.IsRejected(id)
}

func orNotFound(err error) error {
	if err == nil {
		return ErrEventNotFound
	}
	return err
}

// keyOf is the state key of a state event.
func keyOf(ev *event.PDU) room.StateKeyTuple {
	return room.StateKeyTuple{Type: ev.Type, StateKey: *ev.StateKey}
}

// eventLess orders events by origin_server_ts and then event ID, the tie-breaks both orderings
// share.
func eventLess(a, b *event.PDU) bool {
	if a.OriginServerTS != b.OriginServerTS {
		return a.OriginServerTS < b.OriginServerTS
	}
	return a.EventID < b.EventID
}
