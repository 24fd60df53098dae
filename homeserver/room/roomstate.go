package room

import (
	"context"
	"fmt"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// A job works on its own copy of a room's roomState (t.room), but the copy shares the state map
// with the cached room (share): copying thousands of entries for every event of a large room
// cost more than the event. The job writes the map in place, always right after writing the same
// key of current_state at a stream position it took. So:
//
//   - a job that fails before taking a position changed no state: the map needs nothing;
//   - a job that fails after is rolled back to its savepoint, and restoreState brings the maps of
//     its rooms back to the database's current state, which is again the state before the job;
//   - a batch that fails as a whole drops its rooms from the cache (the next job reloads them).

// restoreState makes the state maps of the rooms of a failed job (already rolled back to its
// savepoint) equal to the current state in the database: entries the job added are removed,
// those it replaced or removed are read back.
func (t *txn) restoreState() error {
	ctx := context.Background()
	for id, rs := range t.rooms {
		if err := t.restoreRoom(ctx, rs); err != nil {
			// The map is neither the job's nor the earlier one: no cache may keep it. The batch
			// fails with this error, which drops the rooms of the batch's other jobs too.
			delete(t.s.rooms, id)
			return err
		}
	}
	return nil
}

func (t *txn) restoreRoom(ctx context.Context, rs *roomState) error {
	if rs.roomID == "" {
		return nil // a room the job was creating: dropped with the job
	}
	cur, err := t.c.CurrentState(ctx, rs.roomID)
	if err != nil {
		return err
	}
	var need []string
	for k, id := range cur {
		if ev := rs.state[StateKeyTuple(k)]; ev == nil || ev.EventID != id {
			need = append(need, id)
		}
	}
	for k := range rs.state {
		if _, ok := cur[storage.StateKey(k)]; !ok {
			delete(rs.state, k)
		}
	}
	if len(need) == 0 {
		return nil
	}
	rows, err := t.c.Events(ctx, need)
	if err != nil {
		return err
	}
	if len(rows) != len(need) {
		return fmt.Errorf("room %s: %d of %d current state events are not stored", rs.roomID, len(need)-len(rows), len(need))
	}
	for _, e := range rows {
		p, err := event.Parse(rs.version, e.PDU)
		if err != nil {
			return fmt.Errorf("room %s: stored state event %s: %w", rs.roomID, e.EventID, err)
		}
		if p.StateKey == nil {
			return fmt.Errorf("room %s: current state event %s has no state key", rs.roomID, e.EventID)
		}
		rs.state[StateKeyTuple{p.Type, *p.StateKey}] = p
	}
	return nil
}
