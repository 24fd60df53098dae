package stateres

import (
	"math"
	"sort"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// noMainline is the position of an event whose power levels never meet the mainline (∞).
const noMainline = math.MaxInt

// mainlineOrder is step 3: events sorted by the mainline ordering based on the power levels event
// resolvedPL ("" if the partial state has none): greater mainline position first (events based on
// older power levels), then smaller origin_server_ts, then smaller event ID.
func (s *resolution) mainlineOrder(events []*event.PDU, resolvedPL string) ([]*event.PDU, error) {
	if len(events) == 0 {
		return events, nil
	}
	// The mainline of P₀ = resolvedPL: P₀, P₁, ... each the power levels event among the auth
	// events of the one before, indexed by position.
	position := map[string]int{}
	for id, i := resolvedPL, 0; id != ""; i++ {
		if _, loop := position[id]; loop {
			break
		}
		position[id] = i
		ev, err := s.get(id)
		if err != nil {
			return nil, err
		}
		if ev == nil {
			break
		}
		if id, err = s.powerLevelsAuthEvent(ev); err != nil {
			return nil, err
		}
	}

	// The position of a power levels event off the mainline is that of the first mainline event
	// down its chain of power levels auth events; memoised, as the events share those chains.
	memo := map[string]int{}
	var positionOf func(plID string) (int, error)
	positionOf = func(plID string) (int, error) {
		var path []string
		pos := noMainline
		for id := plID; id != ""; {
			if p, ok := position[id]; ok {
				pos = p
				break
			}
			if p, ok := memo[id]; ok {
				pos = p
				break
			}
			memo[id] = noMainline // cycle guard
			path = append(path, id)
			ev, err := s.get(id)
			if err != nil {
				return 0, err
			}
			if ev == nil {
				break
			}
			next, err := s.powerLevelsAuthEvent(ev)
			if err != nil {
				return 0, err
			}
			id = next
		}
		for _, id := range path {
			memo[id] = pos
		}
		return pos, nil
	}

	type keyed struct {
		ev  *event.PDU
		pos int
	}
	list := make([]keyed, len(events))
	for i, ev := range events {
		// e₀ itself is not on its list: start from its power levels auth event.
		plID, err := s.powerLevelsAuthEvent(ev)
		if err != nil {
			return nil, err
		}
		pos := noMainline
		if plID != "" {
			if pos, err = positionOf(plID); err != nil {
				return nil, err
			}
		}
		list[i] = keyed{ev, pos}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].pos != list[j].pos {
			return list[i].pos > list[j].pos
		}
		return eventLess(list[i].ev, list[j].ev)
	})
	out := make([]*event.PDU, len(list))
	for i, k := range list {
		out[i] = k.ev
	}
	return out, nil
}

// powerLevelsAuthEvent is the ID of the m.room.power_levels event among ev's auth events, or "".
func (s *resolution) powerLevelsAuthEvent(ev *event.PDU) (string, error) {
	for _, aid := range ev.AuthEvents {
		aev, err := s.get(aid)
		if err != nil {
			return "", err
		}
		if aev != nil && aev.Type == room.TypePowerLevels && aev.StateKey != nil && *aev.StateKey == "" {
			return aid, nil
		}
	}
	return "", nil
}
