package sync

import (
	"encoding/json"
	"slices"
	gosync "sync"
	"sync/atomic"

	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Timeline limits: the default when the filter sets none, and the most one room's timeline gets.
const (
	defaultTimelineLimit = 10
	maxTimelineLimit     = 1000
)

// matcher applies one EventFilter / RoomEventFilter of a sync filter. The zero value matches
// everything. A nil list is "no restriction"; an empty, non-nil include list matches nothing.
type matcher struct {
	types, notTypes     []string
	senders, notSenders []string
	rooms, notRooms     []string
	containsURL         *bool
}

func eventMatcher(f *filter.EventFilter) matcher {
	if f == nil {
		return matcher{}
	}
	return matcher{types: f.Types, notTypes: f.NotTypes, senders: f.Senders, notSenders: f.NotSenders}
}

func roomEventMatcher(f *filter.RoomEventFilter) matcher {
	if f == nil {
		return matcher{}
	}
	m := eventMatcher(&f.EventFilter)
	m.rooms, m.notRooms, m.containsURL = f.Rooms, f.NotRooms, f.ContainsURL
	return m
}

// room reports whether events of the room may match.
func (m *matcher) room(roomID string) bool {
	return (m.rooms == nil || slices.Contains(m.rooms, roomID)) && !slices.Contains(m.notRooms, roomID)
}

// typ reports whether an event type matches.
func (m *matcher) typ(t string) bool {
	return (m.types == nil || matchAnyGlob(m.types, t)) && !matchAnyGlob(m.notTypes, t)
}

// sender reports whether a sender matches.
func (m *matcher) sender(s string) bool {
	return (m.senders == nil || slices.Contains(m.senders, s)) && !slices.Contains(m.notSenders, s)
}

// event reports whether a stored event matches (room, type, sender and contains_url).
func (m *matcher) event(e *storage.Event) bool {
	if !m.room(e.RoomID) || !m.typ(e.Type) {
		return false
	}
	if m.senders != nil && !slices.Contains(m.senders, e.Sender) || slices.Contains(m.notSenders, e.Sender) {
		return false
	}
	if m.containsURL != nil {
		var ev struct {
			Content struct {
				URL json.RawMessage `json:"url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(e.ClientJSON, &ev)
		var url string
		has := json.Unmarshal(ev.Content.URL, &url) == nil
		if has != *m.containsURL {
			return false
		}
	}
	return true
}

func matchAnyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if glob(p, s) {
			return true
		}
	}
	return false
}

// glob matches s against a pattern where '*' stands for any sequence of characters (the filter
// spec's only wildcard).
func glob(p, s string) bool {
	for len(p) > 0 {
		if p[0] == '*' {
			for len(p) > 0 && p[0] == '*' {
				p = p[1:]
			}
			if p == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if glob(p, s[i:]) {
					return true
				}
			}
			return false
		}
		if s == "" || p[0] != s[0] {
			return false
		}
		p, s = p[1:], s[1:]
	}
	return s == ""
}

// plan is a sync filter turned into what the sync assembly asks.
type plan struct {
	rooms        matcher // room.rooms / room.not_rooms
	timeline     matcher
	state        matcher
	roomData     matcher // room.account_data
	accountData  matcher // global account_data
	ephemeral    matcher // room.ephemeral
	presence     matcher
	limit        int
	lazyMembers  bool
	includeLeave bool
	// threadCounts: unread_notifications count the main timeline only, and
	// unread_thread_notifications hold each thread's counts.
	threadCounts bool
	// shareKey names the parts of the plan a shared room section depends on (share.go).
	shareKey string
}

func newPlan(f filter.Filter) plan {
	p := plan{limit: defaultTimelineLimit, accountData: eventMatcher(f.AccountData), presence: eventMatcher(f.Presence)}
	if r := f.Room; r != nil {
		p.rooms = matcher{rooms: r.Rooms, notRooms: r.NotRooms}
		p.timeline = roomEventMatcher(r.Timeline)
		p.state = roomEventMatcher(r.State)
		p.roomData = roomEventMatcher(r.AccountData)
		p.ephemeral = roomEventMatcher(r.Ephemeral)
		p.threadCounts = r.Timeline != nil && r.Timeline.UnreadThreadNotifications
		p.includeLeave = r.IncludeLeave
		if r.Timeline != nil && r.Timeline.Limit > 0 {
			p.limit = int(min(r.Timeline.Limit, maxTimelineLimit))
		}
		// The spec puts lazy-loading on the state filter; clients also set it on the timeline filter.
		p.lazyMembers = r.State != nil && r.State.LazyLoadMembers || r.Timeline != nil && r.Timeline.LazyLoadMembers
	}
	p.shareKey = p.sharedKey()
	return p
}

// planCache keeps the plans of the filters in use, by the identity of the filter's parts: a
// filter is never modified once parsed (Request.Filter), and a user's stored filter is parsed
// once (clientapi keeps it), so every sync of a client finds its plan here instead of building
// it again (a plan is a kilobyte; building and copying it was 3-4 % of a fan-out's CPU).
type planCache struct {
	mu gosync.RWMutex
	m  map[planKey]*keyedPlan // a typed map: sync.Map hashed the key through an interface (~4 % of a long poll)
	// last is the plan found last: clients that send the same filter share its parsed form
	// (clientapi), so the receivers woken together for a change mostly ask for one plan.
	last atomic.Pointer[keyedPlan]
}

type keyedPlan struct {
	k planKey
	p *plan
}

type planKey struct {
	room                  *filter.RoomFilter
	accountData, presence *filter.EventFilter
}

// maxPlans bounds the cache; when full it starts over (inline filters are parsed on every
// request, each a new key).
const maxPlans = 10_000

// of returns the plan of f. The plan is shared: never modify it.
func (c *planCache) of(f filter.Filter) *plan {
	k := planKey{f.Room, f.AccountData, f.Presence}
	if last := c.last.Load(); last != nil && last.k == k {
		return last.p
	}
	c.mu.RLock()
	kp := c.m[k]
	c.mu.RUnlock()
	if kp == nil {
		built := newPlan(f)
		kp = &keyedPlan{k: k, p: &built}
		c.mu.Lock()
		if c.m == nil || len(c.m) >= maxPlans {
			c.m = make(map[planKey]*keyedPlan)
		}
		c.m[k] = kp
		c.mu.Unlock()
	}
	c.last.Store(kp)
	return kp.p
}
