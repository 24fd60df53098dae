package room

import (
	"maps"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Outliers: events held outside the room's timeline (auth chains, the state of a room being
// joined), each checked against its own auth events only.

// storeOutliers stores events outside the timeline, each checked against its own auth events.
func (t *txn) storeOutliers(roomID string, v event.Version, pdus []*event.PDU) ([]Outcome, error) {
	pdus = authOrder(pdus)
	ids := make([]string, 0, len(pdus))
	for _, p := range pdus {
		ids = append(ids, p.EventID)
		ids = append(ids, p.AuthEvents...)
	}
	if v.RoomIDFromCreateEvent() {
		ids = append(ids, createEventID(roomID))
	}
	metas, err := t.c.EventMetas(t.ctx, ids)
	if err != nil {
		return nil, err
	}
	have := map[string]*event.PDU{} // events of this call, parsed
	out := make([]Outcome, len(pdus))
	// The rows are written together at the end: nothing below reads back an event of this call
	// from storage (accepted ones are in have, rejected ones marked in metas).
	rows := make([]storage.Event, 0, len(pdus))
	checker := t.s.checker(v)
	for i, p := range pdus {
		out[i].EventID = p.EventID
		if _, ok := metas[p.EventID]; ok {
			out[i].Duplicate = true
			continue
		}
		if p.EffectiveRoomID() != roomID {
			out[i].Err = rejected(p, "the event is not in room %s", roomID)
			continue
		}
		authIDs := slices.Clone(p.AuthEvents)
		if v.RoomIDFromCreateEvent() && p.Type != TypeCreate {
			authIDs = append(authIDs, createEventID(roomID))
		}
		var authEvs []*event.PDU
		var reject *RejectedError
		var load []string
		for _, id := range authIDs {
			if ev := have[id]; ev != nil {
				authEvs = append(authEvs, ev)
			} else if m, ok := metas[id]; ok {
				if m.Rejected {
					reject = rejected(p, "auth event %s was rejected", id)
				}
				load = append(load, id)
			} else {
				reject = rejected(p, "auth event %s is missing", id)
			}
		}
		if len(load) > 0 && reject == nil {
			evs, err := t.loadPDUs(v, load)
			if err != nil {
				return nil, err
			}
			for _, id := range load {
				if evs[id] == nil {
					reject = rejected(p, "auth event %s is missing", id)
					break
				}
				authEvs = append(authEvs, evs[id])
			}
		}
		if reject == nil && p.Type != TypeCreate {
			cited := authEvs
			if v.RoomIDFromCreateEvent() {
				cited = withoutID(authEvs, createEventID(roomID))
			}
			if err := CheckAuthEvents(v, p, cited); err != nil {
				reject = rejected(p, "%v", err)
			}
		}
		if reject == nil {
			if err := checker.Allowed(p, StateFromEvents(authEvs)); err != nil {
				reject = rejected(p, "%v", err)
			}
		}
		var membership string
		if p.Type == TypeMember {
			membership = Membership(p)
		}
		rel := relationOf(p.Content)
		rows = append(rows, storage.Event{
			EventID: p.EventID, RoomID: roomID, Type: p.Type, StateKey: p.StateKey, Sender: p.Sender, Depth: p.Depth,
			OriginServerTS: p.OriginServerTS, Membership: membership, Outlier: true, Rejected: reject != nil,
			RelatesTo: rel.EventID, RelType: rel.RelType, RelKey: rel.Key, PDU: p.Raw, ClientJSON: p.ClientJSON(nil),
		})
		metas[p.EventID] = storage.EventMeta{EventID: p.EventID, Outlier: true, Rejected: reject != nil}
		if reject != nil {
			out[i].Err = reject
			continue
		}
		have[p.EventID] = p
	}
	// Later steps of the job (the current state of a room just joined) take these from here
	// rather than reading and parsing them again.
	if t.parsed == nil {
		t.parsed = make(map[string]*event.PDU, len(have))
	}
	maps.Copy(t.parsed, have)
	// A few rows per statement: one statement per event costs a round trip each on PostgreSQL
	// (the state of a large room is thousands of events), while SQLite's driver looks each bound
	// parameter up in a list as long as the statement's, so very long statements cost more.
	for len(rows) > 0 {
		n := min(len(rows), outlierRowsPerInsert)
		if err := t.c.InsertEvents(t.ctx, rows[:n]); err != nil {
			return nil, err
		}
		rows = rows[n:]
	}
	return out, nil
}

// outlierRowsPerInsert is how many outliers storeOutliers writes per statement.
const outlierRowsPerInsert = 16

func withoutID(evs []*event.PDU, id string) []*event.PDU {
	return slices.DeleteFunc(slices.Clone(evs), func(e *event.PDU) bool { return e.EventID == id })
}

// authOrder sorts events so that each comes after those of its auth events that are among them
// (then by depth); events in an auth cycle come last, in depth order.
func authOrder(pdus []*event.PDU) []*event.PDU {
	sorted := slices.Clone(pdus)
	slices.SortStableFunc(sorted, func(a, b *event.PDU) int {
		switch {
		case a.Depth < b.Depth:
			return -1
		case a.Depth > b.Depth:
			return 1
		}
		return 0
	})
	byID := make(map[string]*event.PDU, len(sorted))
	for _, p := range sorted {
		byID[p.EventID] = p
	}
	done := make(map[string]bool, len(sorted))
	visiting := map[string]bool{}
	out := make([]*event.PDU, 0, len(sorted))
	var visit func(p *event.PDU)
	visit = func(p *event.PDU) {
		if done[p.EventID] || visiting[p.EventID] {
			return
		}
		visiting[p.EventID] = true
		for _, id := range p.AuthEvents {
			if a := byID[id]; a != nil {
				visit(a)
			}
		}
		visiting[p.EventID] = false
		done[p.EventID] = true
		out = append(out, p)
	}
	for _, p := range sorted {
		visit(p)
	}
	return out
}
