package stateres

import (
	"sort"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// separate splits the states into the unconflicted state map (keys present in every state with
// the same event) and the conflicted state set (the events of every other key, each once).
func separate(states []StateMap) (unconflicted StateMap, conflicted map[room.StateKeyTuple][]string) {
	unconflicted = make(StateMap, len(states[0]))
	conflicted = map[room.StateKeyTuple][]string{}
	collect := func(k room.StateKeyTuple) []string {
		var ids []string
		for _, st := range states {
			if id, ok := st[k]; ok && !contains(ids, id) {
				ids = append(ids, id)
			}
		}
		return ids
	}
	// A key is unconflicted only if it is in the first state, so the first state's keys decide
	// most; the others only add keys the first lacks, which are conflicted.
	for k, id := range states[0] {
		agree := true
		for _, other := range states[1:] {
			if oid, ok := other[k]; !ok || oid != id {
				agree = false
				break
			}
		}
		if agree {
			unconflicted[k] = id
		} else {
			conflicted[k] = collect(k)
		}
	}
	for _, st := range states[1:] {
		for k := range st {
			if _, ok := states[0][k]; ok {
				continue
			}
			if _, done := conflicted[k]; !done {
				conflicted[k] = collect(k)
			}
		}
	}
	return unconflicted, conflicted
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fullConflictedSet is the conflicted state set, plus the auth difference, plus (v2.1) the
// conflicted state subgraph; events the fetcher does not have are left out. The result is sorted
// by event ID so that everything after it is independent of map order.
//
// The auth difference: the spec defines the auth chain of an event as the events reachable from it
// through auth_events, without the event itself, and the auth difference from the union of the
// auth chains of each state's events. Read literally, an unconflicted event that a conflicted
// event of only some states cites (typically its sender's membership) would be in the auth
// difference and so in the full conflicted set, to be re-sorted among the power events. Synapse,
// whose results the network converges on, counts each state's own events as reachable from that
// state (its chain cover index and its fallback walk both start from the state events), so
// unconflicted events are never in the difference. This package does the same.
func (s *resolution) fullConflictedSet(states []StateMap, unconflicted StateMap, conflicted map[room.StateKeyTuple][]string) ([]*event.PDU, error) {
	full := map[string]bool{}
	conflictedIDs := map[string]bool{}
	for _, ids := range conflicted {
		for _, id := range ids {
			conflictedIDs[id] = true
			full[id] = true
		}
	}

	// The auth difference ∪Cᵢ − ∩Cᵢ, where Cᵢ is state i's events and their auth chains (see
	// above). Every state shares the unconflicted events, so with U those and their chains and Dᵢ
	// the conflicted events of state i and their chains, Cᵢ = U ∪ Dᵢ and the difference is
	// ∪Dᵢ − ∩Dᵢ − U: only the conflicted events' chains need comparing, and U only where it meets
	// them (dropShared's walk stops at events in every Dᵢ, whose own chains are in every Dᵢ too).
	count := map[string]int{} // in how many Dᵢ an event is
	union := map[string]bool{}
	for _, st := range states {
		var ids []string
		for k := range conflicted {
			if id, ok := st[k]; ok {
				ids = append(ids, id)
			}
		}
		chain, err := s.authChain(ids)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			chain[id] = true
		}
		for id := range chain {
			count[id]++
			union[id] = true
		}
	}
	candidates := map[string]bool{}
	for id := range union {
		if count[id] < len(states) {
			candidates[id] = true
		}
	}
	if len(candidates) > 0 {
		if err := s.dropShared(candidates, unconflicted, func(id string) bool { return count[id] == len(states) }); err != nil {
			return nil, err
		}
		for id := range candidates {
			full[id] = true
		}
	}

	// v2.1: the conflicted state subgraph, every event on an auth_events path from one
	// conflicted event to another.
	if s.v.StateResV21() {
		sub, err := s.conflictedSubgraph(conflictedIDs, union)
		if err != nil {
			return nil, err
		}
		for id := range sub {
			full[id] = true
		}
	}

	out := make([]*event.PDU, 0, len(full))
	for id := range full {
		ev, err := s.get(id)
		if err != nil {
			return nil, err
		}
		if ev != nil && ev.StateKey != nil {
			out = append(out, ev)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].EventID < out[j].EventID })
	return out, nil
}

// dropShared removes from candidates the events in U, the unconflicted events and their auth
// chains. U can be large (every member of the room), so it is not built: each candidate that is
// itself unconflicted is found by its key, and the auth chains of the unconflicted events are
// walked without caching the events, marking the candidates met and not going past events for
// which stop is true (they and their chains are in every state's chain, so hold no candidate).
func (s *resolution) dropShared(candidates map[string]bool, unconflicted StateMap, stop func(id string) bool) error {
	for id := range candidates {
		ev, err := s.get(id)
		if err != nil {
			return err
		}
		if ev != nil && ev.StateKey != nil && unconflicted[keyOf(ev)] == id {
			delete(candidates, id)
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	ids := make([]string, 0, len(unconflicted))
	for _, id := range unconflicted {
		ids = append(ids, id)
	}
	if s.r.AuthChain != nil {
		chain, err := s.r.AuthChain(s.ctx, ids)
		if err != nil {
			return err
		}
		for _, id := range chain {
			delete(candidates, id)
		}
		return nil
	}
	seen := map[string]bool{}
	stack := ids
	for len(stack) > 0 && len(candidates) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ev, err := s.peek(id)
		if err != nil {
			return err
		}
		if ev == nil {
			continue
		}
		for _, aid := range ev.AuthEvents {
			if seen[aid] {
				continue
			}
			seen[aid] = true
			delete(candidates, aid)
			if !stop(aid) {
				stack = append(stack, aid)
			}
		}
	}
	return nil
}

// authChain is the union of the auth chains of ids, from the AuthChainFunc or by walking
// auth_events.
func (s *resolution) authChain(ids []string) (map[string]bool, error) {
	chain := map[string]bool{}
	if len(ids) == 0 {
		return chain, nil
	}
	if s.r.AuthChain != nil {
		list, err := s.r.AuthChain(s.ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, id := range list {
			chain[id] = true
		}
		return chain, nil
	}
	stack := append([]string(nil), ids...)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ev, err := s.get(id)
		if err != nil {
			return nil, err
		}
		if ev == nil {
			continue
		}
		for _, aid := range ev.AuthEvents {
			if chain[aid] {
				continue
			}
			chain[aid] = true
			stack = append(stack, aid)
		}
	}
	return chain, nil
}

// conflictedSubgraph (v2.1) is the set of events on auth_events paths between two events of the
// conflicted state set, endpoints included: the events of the conflicted events' auth chains
// (ancestors) from which a conflicted event can be reached. ancestors is the union of those auth
// chains.
func (s *resolution) conflictedSubgraph(conflicted, ancestors map[string]bool) (map[string]bool, error) {
	// reaches[id]: a conflicted event is id or in its auth chain. Computed depth-first over the
	// ancestors, each event once.
	const (
		unvisited = iota
		visiting
		done
	)
	state := make(map[string]uint8, len(ancestors))
	reaches := make(map[string]bool, len(ancestors))
	type frame struct {
		ev *event.PDU
		i  int
	}
	var visit func(root string) error
	visit = func(root string) error {
		ev, err := s.get(root)
		if err != nil || ev == nil {
			state[root] = done
			reaches[root] = conflicted[root]
			return err
		}
		state[root] = visiting
		stack := []frame{{ev, 0}}
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.i < len(top.ev.AuthEvents) {
				aid := top.ev.AuthEvents[top.i]
				top.i++
				if state[aid] != unvisited || !(ancestors[aid] || conflicted[aid]) {
					continue
				}
				aev, err := s.get(aid)
				if err != nil {
					return err
				}
				if aev == nil {
					state[aid] = done
					continue
				}
				state[aid] = visiting
				stack = append(stack, frame{aev, 0})
				continue
			}
			id := top.ev.EventID
			r := conflicted[id]
			for _, aid := range top.ev.AuthEvents {
				if state[aid] == done && reaches[aid] {
					r = true
					break
				}
			}
			reaches[id], state[id] = r, done
			stack = stack[:len(stack)-1]
		}
		return nil
	}
	sub := map[string]bool{}
	for id := range conflicted {
		if state[id] == unvisited {
			if err := visit(id); err != nil {
				return nil, err
			}
		}
	}
	for id := range ancestors {
		if state[id] == unvisited {
			// Not below any conflicted event through events we have; cannot be on a path.
			continue
		}
		if reaches[id] {
			sub[id] = true
		}
	}
	for id := range conflicted {
		sub[id] = true
	}
	return sub, nil
}
