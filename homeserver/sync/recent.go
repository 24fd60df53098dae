package sync

import (
	"slices"
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// recentEvents are the events of the room writer's latest pipelined batches (room.Service.OnBatch),
// so that the syncs a message wakes read its events from memory: on PostgreSQL the read was a round
// trip that all of them waited for, at every message of a fan-out.
//
// They answer for a range of positions only if every position in it is theirs: the batches are
// kept while each starts where the one before ended, and dropped at a transaction of the serial
// path, which may change stored events (a redaction) or store events of other kinds. Events of
// pipelined batches are never rejected or soft-failed.
type recentEvents struct {
	mu     gosync.Mutex
	lo, hi int64           // every event with a position in (lo, hi] is in evs
	evs    []storage.Event // in position order
}

// maxRecentEvents bounds the events kept; past it the older half goes.
const maxRecentEvents = 2048

func (r *recentEvents) batch(b room.Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case b.Last == 0: // the serial path: forget everything
		r.lo, r.hi, r.evs = 0, 0, nil
	case r.hi != 0 && b.After == r.hi:
		r.evs = append(r.evs, b.Events...)
		r.hi = b.Last
	default:
		r.lo, r.hi, r.evs = b.After, b.Last, slices.Clone(b.Events)
	}
	if len(r.evs) > maxRecentEvents {
		cut := len(r.evs) - maxRecentEvents/2
		r.lo = r.evs[cut-1].StreamPos
		r.evs = slices.Clone(r.evs[cut:])
	}
}

// between answers RoomEventsBetween from memory (newest first, at most limit), if it can.
func (r *recentEvents) between(roomIDs []string, from, to int64, limit int) ([]storage.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hi == 0 || from < r.lo || to > r.hi {
		return nil, false
	}
	var out []storage.Event
	for i := len(r.evs) - 1; i >= 0 && len(out) < limit; i-- {
		e := &r.evs[i]
		if e.StreamPos > to {
			continue
		}
		if e.StreamPos <= from {
			break
		}
		if slices.Contains(roomIDs, e.RoomID) {
			out = append(out, *e)
		}
	}
	return out, true
}
