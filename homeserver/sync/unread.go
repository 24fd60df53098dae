package sync

import (
	"context"
	"hash/maphash"
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
	counts unreadCounts
}

// unreadCounts are a room's unread messages: of the main timeline, and per thread root. The
// threads map of a kept entry is never modified (plus copies it).
type unreadCounts struct {
	main    int
	threads map[string]int
}

// unreadCache is sharded by user: every woken sync takes and puts entries, and one lock for all
// of them was a point of contention at fan-out.
type unreadCache struct {
	shards [16]unreadShard
}

type unreadShard struct {
	mu gosync.Mutex
	m  map[unreadKey]*unreadEntry
}

func (u *unreadCache) shard(k unreadKey) *unreadShard {
	return &u.shards[maphash.String(unreadSeed, k.user)%uint64(len(u.shards))]
}

var unreadSeed = maphash.MakeSeed()

func (u *unreadCache) get(k unreadKey) *unreadEntry {
	sh := u.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[k]
}

func (u *unreadCache) put(k unreadKey, e *unreadEntry) {
	sh := u.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil || len(sh.m) >= maxUnreadEntries/len(u.shards) {
		sh.m = map[unreadKey]*unreadEntry{}
	}
	sh.m[k] = e
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

// plus is u with the messages of evs that are unread by the marks added (the rules of
// storage.UnreadCounts, in memory).
func (u unreadCounts) plus(userID string, marks []storage.Receipt, evs []storage.Event) unreadCounts {
	copied := false
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
		if e.StreamPos <= mark {
			continue
		}
		if thread == "" {
			u.main++
			continue
		}
		if !copied {
			threads := make(map[string]int, len(u.threads)+1)
			for t, n := range u.threads {
				threads[t] = n
			}
			u.threads, copied = threads, true
		}
		u.threads[thread]++
	}
	return u
}

// fill sets the counts of a joined room; threadCounts: per thread (else all in the room's).
func (u unreadCounts) fill(r *JoinedRoom, threadCounts bool) {
	r.UnreadNotifications.NotificationCount += u.main
	for thread, n := range u.threads {
		if n == 0 {
			continue
		}
		if !threadCounts {
			r.UnreadNotifications.NotificationCount += n
			continue
		}
		if r.UnreadThreadNotifications == nil {
			r.UnreadThreadNotifications = map[string]Unread{}
		}
		r.UnreadThreadNotifications[thread] = Unread{NotificationCount: n}
	}
}

// fillUnread sets the unread counts of the joined rooms in the response: from the cache where it
// can, else with one query for the rooms left (and one for their read receipts).
func (s *Service) fillUnread(ctx context.Context, c storage.Conn, req Request, p *plan, jobs []*roomJob, rcPos int64, resp *Response) error {
	if len(resp.Rooms.Join) == 0 {
		return nil
	}
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
	var marks map[string][]storage.Receipt
	if len(check) > 0 {
		rs, err := c.ReadMarks(ctx, req.UserID, check)
		if err != nil {
			return err
		}
		marks = map[string][]storage.Receipt{}
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
		n := cd.e.counts.plus(req.UserID, ms, cd.j.raw)
		n.fill(resp.Rooms.Join[id], p.threadCounts)
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
		counts := make(map[string]unreadCounts, len(miss))
		for _, n := range got {
			u := counts[n.RoomID]
			if n.ThreadID == "" {
				u.main += n.Count
			} else {
				if u.threads == nil {
					u.threads = map[string]int{}
				}
				u.threads[n.ThreadID] += n.Count
			}
			counts[n.RoomID] = u
		}
		for _, id := range miss {
			counts[id].fill(resp.Rooms.Join[id], p.threadCounts)
			// Cached only when the count covers exactly the room's timeline range.
			if j := byRoom[id]; j != nil && j.to == upTo {
				s.unread.put(unreadKey{req.UserID, id}, &unreadEntry{pos: j.to, rcAt: rcPos, marks: missMarks[id], counts: counts[id]})
			}
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
