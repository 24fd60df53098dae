package sync

import (
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/room"
)

// Lazy-loaded members (lazy_load_members): a room's state section carries the member events of
// the timeline's senders. Sending them again in every incremental sync costs a read of the room's
// state per sync and the client nothing but bytes, so the member events sent to each device are
// remembered here, and a sync leaves out those the device already has and that have not changed.
//
// Correctness never depends on this memory: it only ever leaves out an event the device was sent
// in a response it acknowledged (its since token is at or past that response's position), and
// that is still the sender's member event (the notifier has seen no membership event of the
// sender since). Anything else, or anything forgotten, is sent again, which the spec allows.

// maxLazyEntries bounds the memory; when full it starts over.
const maxLazyEntries = 200_000

type lazyKey struct{ user, device, room, member string }

type lazyEntry struct {
	eventID string
	at      int64 // the member event was the member's at this position
	sentTo  int64 // in the response up to this position
}

type lazyCache struct {
	mu gosync.Mutex
	m  map[lazyKey]lazyEntry
}

func (l *lazyCache) get(k lazyKey) (lazyEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[k]
	return e, ok
}

func (l *lazyCache) put(k lazyKey, e lazyEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) >= maxLazyEntries {
		l.m = map[lazyKey]lazyEntry{}
	}
	l.m[k] = e
}

// lazyDone reports whether the device has the current member event of every sender of the
// timeline of a room continuing from since whose timeline starts after startPos, so the state
// section has nothing to add.
func (s *Service) lazyDone(req Request, j *roomJob, since, startPos int64) bool {
	mc := s.notifier.members
	seen := map[string]bool{}
	for _, e := range j.picked {
		if seen[e.Sender] {
			continue
		}
		seen[e.Sender] = true
		le, ok := s.lazy.get(lazyKey{req.UserID, req.DeviceID, j.m.RoomID, e.Sender})
		if !ok || le.sentTo > since || le.at > startPos || !mc.unchangedSince(e.Sender, le.at, startPos) {
			return false
		}
	}
	return true
}

// lazySent records the member events a response carries to the device: in the state section
// (the member's at position at) and in the timeline. Only when the state filter lets every
// member event through.
func (s *Service) lazySent(req Request, p *plan, j *roomJob, stateMembers map[string]string, at int64) {
	if !p.state.room(j.m.RoomID) || !p.state.typ(room.TypeMember) || p.state.senders != nil || len(p.state.notSenders) > 0 ||
		p.state.containsURL != nil {
		return
	}
	for member, id := range stateMembers {
		s.lazy.put(lazyKey{req.UserID, req.DeviceID, j.m.RoomID, member}, lazyEntry{eventID: id, at: at, sentTo: j.to})
	}
	for _, e := range j.picked {
		if e.Type == room.TypeMember && e.StateKey != nil {
			s.lazy.put(lazyKey{req.UserID, req.DeviceID, j.m.RoomID, *e.StateKey}, lazyEntry{eventID: e.EventID, at: e.StreamPos, sentTo: j.to})
		}
	}
}
