package sync

import (
	"context"
	"slices"
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Unread counts. Counting a room's messages after the user's read receipt is a scan of the room's
// messages, too dear for every woken sync. So the counts of each (user, room) are kept with the
// position they cover and the read receipts they were counted from; a sync that continues from
// that position, whose timeline read holds every event since, and whose read receipts are the
// same, adds the new messages of its timeline read to them instead of counting again. A redaction
// among the new events (it may uncount an older message) or any change of the user's read
// receipts counts again from storage. The cache is a cache: a miss reads storage.

// maxUnreadEntries bounds the cache; when full it starts over.
const maxUnreadEntries = 100_000

type unreadKey struct{ user, room string }

type unreadEntry struct {
	pos    int64             // the counts cover the events at or below pos
	rcAt   int64             // the receipts counter read before marks
	marks  []storage.Receipt // the user's read receipts in the room the counts were taken from
	counts map[string]int    // thread root ("" for the main timeline) → unread messages
}

type unreadCache struct {
	mu gosync.Mutex
	m  map[unreadKey]*unreadEntry
}

func (u *unreadCache) get(k unreadKey) *unreadEntry {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[k]
}

func (u *unreadCache) put(k unreadKey, e *unreadEntry) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil || len(u.m) >= maxUnreadEntries {
		u.m = map[unreadKey]*unreadEntry{}
	}
	u.m[k] = e
}

// sameMarks reports whether two sets of read receipts of one room are the same.
func sameMarks(a, b []storage.Receipt) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y storage.Receipt) bool {
			return x.Type == y.Type && x.ThreadID == y.ThreadID && x.EventPos == y.EventPos
		}) {
			return false
		}
	}
	return true
}

// countNew adds to counts the messages of evs that are unread by the marks (the rules of
// storage.UnreadCounts, in memory).
func countNew(counts map[string]int, userID string, marks []storage.Receipt, evs []storage.Event) {
	for i := range evs {
		e := &evs[i]
		if e.Type != "m.room.message" && e.Type != "m.room.encrypted" || e.Sender == userID || e.RedactedBy != "" ||
			e.Rejected || e.SoftFailed || e.StreamPos == 0 {
			continue
		}
		thread, markThread := "", "main"
		if e.RelType == room.RelThread {
			thread, markThread = e.RelatesTo, e.RelatesTo
		}
		var mark int64
		for _, m := range marks {
			if m.ThreadID == "" || m.ThreadID == markThread {
				mark = max(mark, m.EventPos)
			}
		}
		if e.StreamPos > mark {
			counts[thread]++
		}
	}
}

// fillUnread sets the unread counts of the joined rooms in the response: from the cache where it
// can, else with one query for the rooms left (and one for their read receipts).
func (s *Service) fillUnread(ctx context.Context, c storage.Conn, req Request, p plan, jobs []*roomJob, rcPos int64, resp *Response) error {
	if len(resp.Rooms.Join) == 0 {
		return nil
	}
	counts := make(map[string]map[string]int, len(resp.Rooms.Join))
	type candidate struct {
		j *roomJob
		e *unreadEntry
	}
	var cands []candidate
	var miss []string
	for _, j := range jobs {
		if j.leave {
			continue
		}
		if resp.Rooms.Join[j.m.RoomID] == nil {
			// Not sent: with no event in (from, to] the counts at to are those at from.
			k := unreadKey{req.UserID, j.m.RoomID}
			if e := s.unread.get(k); e != nil && j.from > 0 && e.pos == j.from && j.to > j.from && j.scanned <= j.from && len(j.raw) == 0 {
				s.unread.put(k, &unreadEntry{pos: j.to, rcAt: e.rcAt, marks: e.marks, counts: e.counts})
			}
			continue
		}
		e := s.unread.get(unreadKey{req.UserID, j.m.RoomID})
		if e == nil || j.from == 0 || e.pos != j.from || j.scanned > j.from || hasRedaction(j.raw) {
			miss = append(miss, j.m.RoomID)
			continue
		}
		cands = append(cands, candidate{j, e})
	}
	// Candidates whose read receipts may have changed since they were counted: read them.
	var check []string
	for _, cd := range cands {
		if cd.e.rcAt != rcPos {
			check = append(check, cd.j.m.RoomID)
		}
	}
	marks := map[string][]storage.Receipt{}
	if len(check) > 0 {
		rs, err := c.ReadMarks(ctx, req.UserID, check)
		if err != nil {
			return err
		}
		for _, r := range rs {
			marks[r.RoomID] = append(marks[r.RoomID], r)
		}
	}
	for _, cd := range cands {
		id := cd.j.m.RoomID
		ms := cd.e.marks
		if cd.e.rcAt != rcPos {
			if !sameMarks(ms, marks[id]) {
				miss = append(miss, id)
				continue
			}
			ms = marks[id]
		}
		n := make(map[string]int, len(cd.e.counts)+1)
		for t, v := range cd.e.counts {
			n[t] = v
		}
		countNew(n, req.UserID, ms, cd.j.raw)
		counts[id] = n
		s.unread.put(unreadKey{req.UserID, id}, &unreadEntry{pos: cd.j.to, rcAt: rcPos, marks: ms, counts: n})
	}
	if len(miss) > 0 {
		// The read receipts first: a receipt stored between the two reads makes the next sync
		// see other receipts than these, and count again.
		rs, err := c.ReadMarks(ctx, req.UserID, miss)
		if err != nil {
			return err
		}
		missMarks := map[string][]storage.Receipt{}
		for _, r := range rs {
			missMarks[r.RoomID] = append(missMarks[r.RoomID], r)
		}
		byRoom := map[string]*roomJob{}
		upTo := int64(0)
		for _, j := range jobs {
			byRoom[j.m.RoomID] = j
			upTo = max(upTo, j.to)
		}
		got, err := c.UnreadCounts(ctx, req.UserID, miss, upTo)
		if err != nil {
			return err
		}
		for _, id := range miss {
			counts[id] = map[string]int{}
		}
		for _, n := range got {
			counts[n.RoomID][n.ThreadID] += n.Count
		}
		for _, id := range miss {
			// Cached only when the count covers exactly the room's timeline range.
			if j := byRoom[id]; j != nil && j.to == upTo {
				s.unread.put(unreadKey{req.UserID, id}, &unreadEntry{pos: j.to, rcAt: rcPos, marks: missMarks[id], counts: counts[id]})
			}
		}
	}
	for id, byThread := range counts {
		r := resp.Rooms.Join[id]
		for thread, n := range byThread {
			if n == 0 {
				continue
			}
			if thread == "" || !p.threadCounts {
				r.UnreadNotifications.NotificationCount += n
				continue
			}
			if r.UnreadThreadNotifications == nil {
				r.UnreadThreadNotifications = map[string]Unread{}
			}
			r.UnreadThreadNotifications[thread] = Unread{NotificationCount: n}
		}
	}
	return nil
}

func hasRedaction(evs []storage.Event) bool {
	for _, e := range evs {
		if e.Type == "m.room.redaction" {
			return true
		}
	}
	return false
}
