package sync

import (
	"context"
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/coalesce"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The memberships of each syncing user, kept between its syncs. Every woken sync needs the user's
// rooms; reading them is one query per sync, most of the CPU of a fan-out once the events are
// shared. A user's memberships change only with a membership event whose state key is the user,
// and the notifier reads every membership event of the stream anyway; it records here, per user,
// the position of the latest one it saw, and up to which position it has seen them all.
//
// A user's memberships read with the events counter at position at are still current at position
// pos if the notifier has seen every membership event up to pos and the user's latest is at or
// below at. When the notifier is behind pos (events committed after the wake-up), one shared read
// of the membership events brings it up to date for all the syncs that need it.
//
// A room forgotten changes the list without a membership event; the room service counts forgets
// and an entry taken before a forget is not used after it. (Forgets on another node are not seen:
// a sync there may list a room forgotten a moment ago once more, as it would have a moment
// earlier.) Initial syncs always read storage.

// maxMemberEntries bounds the cache; when full it starts over.
const maxMemberEntries = 100_000

type memberEntry struct {
	ms      []storage.Membership
	at      int64 // the events counter read before ms
	forgets int64 // the room service's forget count read before ms
}

type memberCache struct {
	base       int64 // applied at start: membership events at or below are not in lastChange
	mu         gosync.Mutex
	applied    int64            // every membership event at or below is in lastChange
	lastChange map[string]int64 // user → position of their latest membership event seen
	users      map[string]memberEntry

	catchUp *coalesce.Reader[struct{}]
}

func newMemberCache(store *storage.Store, applied int64) *memberCache {
	m := &memberCache{base: applied, applied: applied, lastChange: map[string]int64{}, users: map[string]memberEntry{}}
	m.catchUp = coalesce.NewReader(func(ctx context.Context) (struct{}, error) {
		m.mu.Lock()
		from := m.applied
		m.mu.Unlock()
		c := store.Read()
		to, err := c.Position(ctx, storage.StreamEvents)
		if err != nil || to <= from {
			return struct{}{}, err
		}
		changes, err := c.MembershipChangesBetween(ctx, from, to)
		if err != nil {
			return struct{}{}, err
		}
		m.apply(changes, to)
		return struct{}{}, nil
	})
	return m
}

// apply records the membership events of a read that covered every one from a position at or
// below applied up to to.
func (m *memberCache) apply(changes []storage.MembershipChange, to int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.lastChange) >= maxMemberEntries {
		// Forgetting who changed when is only safe with everything before forgotten too.
		m.lastChange = map[string]int64{}
		m.users = map[string]memberEntry{}
	}
	for _, ch := range changes {
		m.lastChange[ch.UserID] = max(m.lastChange[ch.UserID], ch.StreamPos)
	}
	m.applied = max(m.applied, to)
}

// applyQuiet records that the positions after < pos <= last hold no member event, if the cache
// has applied everything up to after.
func (m *memberCache) applyQuiet(after, last int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if after <= m.applied {
		m.applied = max(m.applied, last)
	}
}

// get returns the user's memberships if the kept ones are current at pos.
func (m *memberCache) get(ctx context.Context, userID string, pos, forgets int64) ([]storage.Membership, bool) {
	m.mu.Lock()
	e, ok := m.users[userID]
	behind := m.applied < pos
	m.mu.Unlock()
	if !ok || e.forgets != forgets {
		return nil, false
	}
	if behind {
		if _, err := m.catchUp.Read(ctx); err != nil {
			return nil, false
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applied < pos || m.lastChange[userID] > e.at {
		return nil, false
	}
	return e.ms, true
}

func (m *memberCache) put(userID string, e memberEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.users) >= maxMemberEntries {
		m.users = map[string]memberEntry{}
	}
	m.users[userID] = e
}

// unchangedSince reports whether the notifier has seen every membership event up to pos and none
// of the user's after position at (a false answer may be wrong, a true one is not).
func (m *memberCache) unchangedSince(userID string, at, pos int64) bool {
	if at < m.base {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied >= pos && m.lastChange[userID] <= at
}
