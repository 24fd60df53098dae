package stateres

import (
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// partialState is the state the iterative auth checks build: a base (the unconflicted state map
// in v2, nothing in v2.1) with the entries the checks have set on top, so the base is never
// copied.
type partialState struct {
	base    StateMap
	changed StateMap
}

func newPartialState(base StateMap) *partialState {
	return &partialState{base: base, changed: StateMap{}}
}

// get is the event ID at k ("" if none).
func (p *partialState) get(k room.StateKeyTuple) string {
	if id, ok := p.changed[k]; ok {
		return id
	}
	return p.base[k]
}

// iterativeAuthChecks applies the sorted events in turn to the partial state, each one that the
// authorisation rules allow against it. A key the rules need that the partial state lacks is
// taken from the event's own auth events, unless that auth event was rejected; in v12 the create
// event, which events do not cite, comes from the room ID.
//
// Every event is checked, including events rejected earlier because of the state at them: the
// spec has them "handled as usual" here (Synapse instead skips them).
func (s *resolution) iterativeAuthChecks(p *partialState, events []*event.PDU) error {
	for _, ev := range events {
		if err := s.tick(); err != nil {
			return err
		}
		var failed error
		lookup := func(typ, stateKey string) *event.PDU {
			k := room.StateKeyTuple{Type: typ, StateKey: stateKey}
			if id := p.get(k); id != "" {
				sev, err := s.get(id)
				if err != nil {
					failed = err
					return nil
				}
				if sev != nil {
					return sev
				}
			}
			for _, aid := range ev.AuthEvents {
				aev, err := s.get(aid)
				if err != nil {
					failed = err
					return nil
				}
				if aev != nil && aev.StateKey != nil && aev.Type == typ && *aev.StateKey == stateKey && !s.rejected(aid) {
					return aev
				}
			}
			if typ == room.TypeCreate && stateKey == "" {
				return s.create
			}
			return nil
		}
		allowed := s.checker.Allowed(ev, lookup) == nil
		if failed != nil {
			return failed
		}
		if allowed {
			p.changed[keyOf(ev)] = ev.EventID
		}
	}
	return nil
}
