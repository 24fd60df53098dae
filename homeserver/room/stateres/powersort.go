package stateres

import (
	"container/heap"
	"fmt"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// isPowerEvent: m.room.power_levels and m.room.join_rules (with the empty state key, the ones the
// auth rules read, as Synapse and gomatrixserverlib also take it), and memberships of leave or ban
// that someone other than the target sent (kicks and bans).
func isPowerEvent(ev *event.PDU) bool {
	if ev.StateKey == nil {
		return false
	}
	switch ev.Type {
	case room.TypePowerLevels, room.TypeJoinRules:
		return *ev.StateKey == ""
	case room.TypeMember:
		if *ev.StateKey == ev.Sender {
			return false
		}
		m := room.Membership(ev)
		return m == room.MembershipLeave || m == room.MembershipBan
	}
	return false
}

// powerEvents is step 1: the set X of the power events of the full conflicted set and of the
// events in their auth chains that are also in the full conflicted set, in reverse topological
// power ordering. It also returns X as a set.
func (s *resolution) powerEvents(full []*event.PDU) ([]*event.PDU, map[string]bool, error) {
	inFull := make(map[string]bool, len(full))
	for _, ev := range full {
		inFull[ev.EventID] = true
	}
	inX := map[string]bool{}
	var roots []string
	for _, ev := range full {
		if isPowerEvent(ev) {
			inX[ev.EventID] = true
			roots = append(roots, ev.EventID)
		}
	}
	if len(roots) == 0 {
		return nil, inX, nil
	}
	// The auth chains of the power events, walked once: every event reached that is in the full
	// conflicted set joins X.
	reached := map[string]bool{}
	stack := append([]string(nil), roots...)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ev, err := s.get(id)
		if err != nil {
			return nil, nil, err
		}
		if ev == nil {
			continue
		}
		for _, aid := range ev.AuthEvents {
			if reached[aid] {
				continue
			}
			reached[aid] = true
			if inFull[aid] {
				inX[aid] = true
			}
			stack = append(stack, aid)
		}
	}
	x := make([]*event.PDU, 0, len(inX))
	for _, ev := range full {
		if inX[ev.EventID] {
			x = append(x, ev)
		}
	}
	sorted, err := s.reverseTopologicalPowerOrder(x, inX)
	return sorted, inX, err
}

// reverseTopologicalPowerOrder sorts the events x (a set closed as step 1 builds it) by Kahn's
// algorithm over the auth_events DAG, taking at each step the smallest ready event: higher sender
// power level first, then smaller origin_server_ts, then smaller event ID.
//
// An event of x depends on the events of x in its auth chain. Where an auth_events path between
// two of them leaves x (possible in v2 for a conflicted event that is in every auth chain; in v2.1
// the conflicted state subgraph rules it out) the dependency still holds: deps are the nearest
// events of x below each auth event.
func (s *resolution) reverseTopologicalPowerOrder(x []*event.PDU, inX map[string]bool) ([]*event.PDU, error) {
	// below[id] for an event outside x: the nearest events of x in its auth chain.
	below := map[string][]string{}
	var nearest func(id string) ([]string, error)
	nearest = func(id string) ([]string, error) {
		if r, ok := below[id]; ok {
			return r, nil
		}
		below[id] = nil // cycle guard
		ev, err := s.get(id)
		if err != nil || ev == nil {
			return nil, err
		}
		var out []string
		for _, aid := range ev.AuthEvents {
			if inX[aid] {
				out = appendUnique(out, aid)
				continue
			}
			sub, err := nearest(aid)
			if err != nil {
				return nil, err
			}
			for _, d := range sub {
				out = appendUnique(out, d)
			}
		}
		below[id] = out
		return out, nil
	}

	pending := make(map[string]int, len(x))
	dependents := make(map[string][]string, len(x))
	byID := make(map[string]*event.PDU, len(x))
	for _, ev := range x {
		byID[ev.EventID] = ev
	}
	for _, ev := range x {
		var deps []string
		for _, aid := range ev.AuthEvents {
			if aid == ev.EventID {
				continue
			}
			if inX[aid] {
				deps = appendUnique(deps, aid)
				continue
			}
			sub, err := nearest(aid)
			if err != nil {
				return nil, err
			}
			for _, d := range sub {
				if d != ev.EventID {
					deps = appendUnique(deps, d)
				}
			}
		}
		pending[ev.EventID] = len(deps)
		for _, d := range deps {
			dependents[d] = append(dependents[d], ev.EventID)
		}
	}

	ready := &powerHeap{}
	for _, ev := range x {
		if pending[ev.EventID] == 0 {
			pl, err := s.senderPower(ev)
			if err != nil {
				return nil, err
			}
			ready.items = append(ready.items, powerItem{ev, pl})
		}
	}
	heap.Init(ready)
	out := make([]*event.PDU, 0, len(x))
	for ready.Len() > 0 {
		it := heap.Pop(ready).(powerItem)
		out = append(out, it.ev)
		for _, d := range dependents[it.ev.EventID] {
			pending[d]--
			if pending[d] == 0 {
				pl, err := s.senderPower(byID[d])
				if err != nil {
					return nil, err
				}
				heap.Push(ready, powerItem{byID[d], pl})
			}
		}
	}
	if len(out) != len(x) {
		return nil, fmt.Errorf("stateres: the auth events of %d power events form a cycle", len(x)-len(out))
	}
	return out, nil
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// senderPower is the power level of ev's sender according to ev's own auth events: the
// m.room.power_levels among them (or the defaults if none, under which the creator has 100 before
// v12) and, from v12, the creators' infinite level.
func (s *resolution) senderPower(ev *event.PDU) (int64, error) {
	var pl, create *event.PDU
	for _, aid := range ev.AuthEvents {
		aev, err := s.get(aid)
		if err != nil {
			return 0, err
		}
		if aev == nil || aev.StateKey == nil || *aev.StateKey != "" {
			continue
		}
		switch aev.Type {
		case room.TypePowerLevels:
			if pl == nil {
				pl = aev
			}
		case room.TypeCreate:
			if create == nil {
				create = aev
			}
		}
	}
	if s.v.RoomIDFromCreateEvent() {
		create = s.create
	}
	return s.checker.PowerLevels(create, pl).UserLevel(ev.Sender), nil
}

// powerItem is an event ready to be sorted with its sender's power level.
type powerItem struct {
	ev    *event.PDU
	power int64
}

type powerHeap struct{ items []powerItem }

func (h *powerHeap) Len() int { return len(h.items) }
func (h *powerHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if a.power != b.power {
		return a.power > b.power
	}
	return eventLess(a.ev, b.ev)
}
func (h *powerHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *powerHeap) Push(x any)    { h.items = append(h.items, x.(powerItem)) }
func (h *powerHeap) Pop() any {
	it := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return it
}
