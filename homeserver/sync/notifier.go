package sync

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"runtime"
	"slices"
	gosync "sync"
	"sync/atomic"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Notifier wakes the long polls of users when something relevant to them happens. It carries no
// data: a woken sync reads storage again from its token, so a lost race costs a wasted read, never
// a lost event.
//
//	room writer ── hs.room.<id> {room_id,pos} ──┐   (core NATS: every node sees every notice)
//	account    ── hs.account_data {user,pos} ───┤
//	receipts   ── hs.receipt {room,user,private}┤
//	typing     ── WakeRoom(room) ───────────────┤   (in-process: typing and presence share
//	presence   ── WakeSharing(users) ───────────┤    their state over their own subjects)
//	                                            ▼
//	        subscription callback: append to pending, kick the worker (never blocks)
//	                                            ▼
//	        worker: drain pending; one query for the membership events up to the highest
//	        position; one query for the rooms of users whose presence changed; update room →
//	        joined users; wake the joined users of each room, the targets of membership events,
//	        the owners of account data and private receipts
//	                                            ▼
//	        per user: close the channel the parked long polls wait on, start a new one
//
// A long poll calls Listen BEFORE it reads storage and waits on the channel it got only if the
// read found nothing: anything committed after the read is announced after Listen, so it closes
// that channel (no lost wake-up). An idle long poll is a goroutine parked on a channel.
//
// The room → joined users index covers the rooms announced since start; a room is loaded from
// current state the first time it is announced. It is a cache of storage kept fresh by the bus,
// never the only copy of anything.
//
// Lock order: mu is never held while pendingMu is taken, and neither is held across a query.
type Notifier struct {
	store *storage.Store
	log   *slog.Logger

	// keyCounts caches one-time key counts; the wake-ups of BusWaker (key uploads and claims,
	// to-device messages) and device changes invalidate a user's.
	keyCounts keyCountCache

	mu     gosync.Mutex
	users  map[string]*signal // users with a parked long poll, and some who had one
	parked atomic.Int64       // listeners not released, of all users

	pendingMu gosync.Mutex
	pending   []notice
	kick      chan struct{}

	// alone: no other node writes to the database (the bus is this process's own, or none).
	alone atomic.Bool
	// notices counts the bus notices of changes received (from any node), each counted before
	// anyone is woken for it: the cached stream positions are current only while it stays put.
	notices atomic.Uint64
	// membershipReads counts the reads of membership changes (tests).
	membershipReads atomic.Int64

	// Written by the worker goroutine only, under roomsMu (JoinedAmong reads them).
	roomsMu gosync.RWMutex
	rooms   map[string]map[string]struct{} // room → joined users
	lastPos int64                          // membership events applied up to here

	// members is the per-user membership cache of the sync service, fed with the membership
	// events the worker reads.
	members *memberCache

	subs []interface{ Unsubscribe() error }
	stop chan struct{}
	wg   gosync.WaitGroup

	// Work of the sync service done off a request's path (delivery receipts); Close ends it
	// before the caller closes the store.
	bgMu     gosync.Mutex
	bgClosed bool
	bgWG     gosync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

// signal is one user's wake-up channel: closed on a wake-up and replaced. A signal stays after
// its last listener leaves, for the user's next long poll (at fan-out the same users listen again
// at once); a wake-up finding no listener drops it, and so does a sweep when most signals have
// none.
//
// waiters only grows under mu (Listen), so a wake-up or sweep under mu that reads 0 knows nobody
// listens; Release decrements it without the lock.
type signal struct {
	ch      chan struct{}
	waiters atomic.Int32
}

// notice is one message of the bus: a room event (RoomID set) or a user's account data; or one
// wake-up asked in-process (kind set).
type notice struct {
	RoomID  string `json:"room_id"`
	UserID  string `json:"user_id"`
	Pos     int64  `json:"pos"`
	Private bool   `json:"private"` // receipts: only the user sees it
	// NoMembers: the room writer's batch that stored the event at Pos stored no member event at
	// any of its positions, which are those after After (pipelined batches of plain sends).
	After     int64 `json:"after"`
	NoMembers bool  `json:"no_members"`

	kind noticeKind
}

type noticeKind uint8

const (
	kindEvent       noticeKind = iota // room event or account data
	kindRoom                          // wake the room's members; no event position
	kindUser                          // wake the user
	kindSharingUser                   // wake the user and everyone sharing a room with them
)

// NewNotifier subscribes to the bus (nil: no subscriptions, for tests that call Wake directly) and
// starts the worker; Close stops both.
func NewNotifier(ctx context.Context, store *storage.Store, b *bus.Bus, log *slog.Logger) (*Notifier, error) {
	pos, err := store.Read().Position(ctx, storage.StreamEvents)
	if err != nil {
		return nil, err
	}
	n := &Notifier{store: store, log: log, users: map[string]*signal{}, kick: make(chan struct{}, 1),
		rooms: map[string]map[string]struct{}{}, lastPos: pos, stop: make(chan struct{}), members: newMemberCache(store, pos)}
	n.bgCtx, n.bgCancel = context.WithCancel(context.Background())
	n.alone.Store(b == nil || b.Embedded()) // an embedded NATS server does not listen: no node but this one
	if b != nil {
		for subject, fn := range map[string]func([]byte){bus.SubjectRoomEvents: n.receive, bus.SubjectAccountData: n.receive,
			bus.SubjectReceipt: n.receiveReceipt} {
			sub, err := b.Subscribe(subject, fn)
			if err != nil {
				n.Close()
				return nil, err
			}
			n.subs = append(n.subs, sub)
		}
	}
	n.wg.Add(1)
	go n.worker()
	return n, nil
}

// Close unsubscribes and stops the worker.
func (n *Notifier) Close() {
	for _, s := range n.subs {
		_ = s.Unsubscribe()
	}
	n.subs = nil
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	n.wg.Wait()
	n.bgMu.Lock()
	n.bgClosed = true
	n.bgMu.Unlock()
	n.bgCancel()
	n.bgWG.Wait()
}

// background runs fn in a goroutine of its own with a context that Close cancels (and waits for
// fn to return); after Close it does not run fn.
func (n *Notifier) background(fn func(ctx context.Context)) {
	n.bgMu.Lock()
	defer n.bgMu.Unlock()
	if n.bgClosed {
		return
	}
	n.bgWG.Add(1)
	go func() {
		defer n.bgWG.Done()
		fn(n.bgCtx)
	}()
}

// Listener is one wait for a user's next wake-up: C is closed at it. Release it once, when done
// waiting.
type Listener struct {
	C <-chan struct{}
	n *Notifier
	s *signal
}

// Listen starts a wait for the user's next wake-up.
func (n *Notifier) Listen(userID string) Listener {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.users[userID]
	if s == nil {
		if int64(len(n.users)) > 2*n.parked.Load()+1024 {
			n.sweep()
		}
		s = &signal{ch: make(chan struct{})}
		n.users[userID] = s
	}
	s.waiters.Add(1)
	n.parked.Add(1)
	return Listener{C: s.ch, n: n, s: s}
}

// Release ends the wait.
func (l Listener) Release() {
	l.s.waiters.Add(-1)
	l.n.parked.Add(-1)
}

// sweep drops the signals nobody listens to. Called with mu held.
func (n *Notifier) sweep() {
	for u, s := range n.users {
		if s.waiters.Load() == 0 {
			delete(n.users, u)
		}
	}
}

// Wake wakes the long polls of the users (those not waiting cost nothing).
func (n *Notifier) Wake(users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		if s := n.users[u]; s != nil {
			n.wake(u, s)
		}
	}
}

// wake closes a user's signal: replaced if someone listens, else dropped. Called with mu held.
func (n *Notifier) wake(userID string, s *signal) {
	close(s.ch)
	if s.waiters.Load() == 0 {
		delete(n.users, userID)
		return
	}
	s.ch = make(chan struct{})
}

// wakeAll wakes every waiting user (when the index cannot be trusted).
func (n *Notifier) wakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u, s := range n.users {
		n.wake(u, s)
	}
}

// receive is the bus callback: queue and return.
func (n *Notifier) receive(data []byte) {
	n.notices.Add(1)
	var m notice
	if err := json.Unmarshal(data, &m); err != nil || m.RoomID == "" && m.UserID == "" {
		n.log.Warn("sync notifier: bad notice", "data", string(data))
		return
	}
	n.enqueue(m)
}

// receiveReceipt is the bus callback of receipts: the room's members, or the user alone for a
// private receipt.
func (n *Notifier) receiveReceipt(data []byte) {
	n.notices.Add(1)
	var m notice
	if err := json.Unmarshal(data, &m); err != nil || m.RoomID == "" || m.UserID == "" {
		n.log.Warn("sync notifier: bad receipt notice", "data", string(data))
		return
	}
	if m.Private {
		n.enqueue(notice{UserID: m.UserID, kind: kindUser})
	} else {
		n.enqueue(notice{RoomID: m.RoomID, kind: kindRoom})
	}
}

// WakeRoom wakes the joined members of a room (typing changes).
func (n *Notifier) WakeRoom(roomID string) { n.enqueue(notice{RoomID: roomID, kind: kindRoom}) }

// WakeSharing wakes the users and everyone joined to a room with one of them (presence changes).
// Calls that arrive together are handled with one query.
func (n *Notifier) WakeSharing(userIDs ...string) {
	for _, u := range userIDs {
		n.enqueue(notice{UserID: u, kind: kindSharingUser})
	}
}

func (n *Notifier) enqueue(m notice) {
	n.pendingMu.Lock()
	n.pending = append(n.pending, m)
	n.pendingMu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *Notifier) worker() {
	defer n.wg.Done()
	for {
		select {
		case <-n.kick:
		case <-n.stop:
			return
		}
		n.pendingMu.Lock()
		batch := n.pending
		n.pending = nil
		n.pendingMu.Unlock()
		n.process(batch)
	}
}

// process handles a batch of notices with one membership query, whatever the batch size.
func (n *Notifier) process(batch []notice) {
	ctx := context.Background()
	wake := map[string]struct{}{}
	roomsHit := map[string]struct{}{}
	var maxPos int64
	var sharing []string
	var quiet []notice // notices saying positions hold no member event
	for _, m := range batch {
		switch {
		case m.kind == kindRoom:
			roomsHit[m.RoomID] = struct{}{}
		case m.kind == kindSharingUser:
			wake[m.UserID] = struct{}{}
			sharing = append(sharing, m.UserID)
		case m.RoomID != "":
			roomsHit[m.RoomID] = struct{}{}
			maxPos = max(maxPos, m.Pos)
			if m.NoMembers {
				quiet = append(quiet, m)
			}
		default:
			wake[m.UserID] = struct{}{}
		}
	}
	trusted := true
	if len(sharing) > 0 {
		rooms, err := n.store.Read().JoinedRoomsOfUsers(ctx, sharing)
		if err != nil {
			n.log.Error("sync notifier: read rooms of users", "err", err)
			trusted = false
		}
		for _, r := range rooms {
			roomsHit[r] = struct{}{}
		}
	}
	if maxPos > n.lastPos && noMembersUpTo(quiet, n.lastPos) >= maxPos {
		// Every new position is in a batch without member events: nothing to read.
		n.roomsMu.Lock()
		n.lastPos = maxPos
		n.roomsMu.Unlock()
		n.members.apply(nil, maxPos)
	} else if maxPos > n.lastPos {
		n.membershipReads.Add(1)
		changes, err := n.store.Read().MembershipChangesBetween(ctx, n.lastPos, maxPos)
		if err != nil {
			n.log.Error("sync notifier: read membership changes", "err", err)
			trusted = false
		} else {
			n.roomsMu.Lock()
			n.lastPos = maxPos
			for _, ch := range changes {
				wake[ch.UserID] = struct{}{}
				members := n.rooms[ch.RoomID]
				if members == nil {
					continue // loaded from current state when first needed
				}
				if ch.Membership == "join" {
					members[ch.UserID] = struct{}{}
				} else {
					delete(members, ch.UserID)
				}
			}
			n.roomsMu.Unlock()
			n.members.apply(changes, maxPos)
		}
	}
	var sets []map[string]struct{}
	for roomID := range roomsHit {
		members := n.rooms[roomID]
		if members == nil {
			ms, err := n.store.Read().RoomMembers(ctx, roomID, "join")
			if err != nil {
				n.log.Error("sync notifier: load room members", "room_id", roomID, "err", err)
				trusted = false
				continue
			}
			members = make(map[string]struct{}, len(ms))
			for _, m := range ms {
				members[m.UserID] = struct{}{}
			}
			n.roomsMu.Lock()
			n.rooms[roomID] = members
			n.roomsMu.Unlock()
		}
		sets = append(sets, members)
	}
	if !trusted {
		n.wakeAll()
		return
	}
	if len(sets) == 1 && len(wake) == 0 {
		// One room's news (the usual batch): its members are the set to wake, as they are.
		n.wakeSet(sets[0])
		return
	}
	for _, members := range sets {
		for u := range members {
			wake[u] = struct{}{}
		}
	}
	n.wakeSet(wake)
}

// noMembersUpTo returns the last position up to which the positions after from are known to hold
// no member event, from notices that say so of their batch: each covers the positions after its
// After up to its Pos (a batch's notices may come separately, each a part of it).
func noMembersUpTo(quiet []notice, from int64) int64 {
	slices.SortFunc(quiet, func(a, b notice) int { return cmp.Compare(a.After, b.After) })
	for _, m := range quiet {
		if m.After <= from && m.Pos > from {
			from = m.Pos
		}
	}
	return from
}

// wakeChunk is how many users wakeSet wakes before it yields its processor.
//
// A message to a room of 1,000 long-polling members wakes 1,000 goroutines, each then ~70 µs of
// work (build, write, read the next request). Woken at once, they all sat in Go's run queues,
// which are first in, first out and where the network is polled only when they run dry (or
// every 10 ms): a request that arrived meanwhile, such as the sender's next message, waited for
// the whole fan-out before it was even read (its PUT took ~40 ms at 20 messages a second against
// ~2 ms with the machine less busy), and so did that message's own fan-out. Woken a chunk at a
// time, with the waker yielding between chunks, the queues stay short: the PUT is read and
// committed at once, and the members not yet answered then get both messages in one response.
// With 1,000 long polls at 20 messages a second this brought the delivery p99 from 108-146 ms
// to 67-95 ms on the same host (docs/performance.md).
const wakeChunk = 16

// wakeSet wakes the long polls of a set of users, as Wake: wakeChunk users at a time, yielding
// the processor (and the notifier's lock) between chunks. users may be a room's member set of
// n.rooms: only the worker, which is the caller, changes those.
func (n *Notifier) wakeSet(users map[string]struct{}) {
	i := 0
	n.mu.Lock()
	for u := range users {
		if s := n.users[u]; s != nil {
			n.wake(u, s)
			if i++; i%wakeChunk == 0 && i < len(users) {
				n.mu.Unlock()
				runtime.Gosched()
				n.mu.Lock()
			}
		}
	}
	n.mu.Unlock()
}

// JoinedAmong returns which of users are joined to at least one of rooms, from the room index, if
// the index holds every one of the rooms and every membership event up to position pos (ok false
// otherwise: ask storage).
func (n *Notifier) JoinedAmong(rooms, users []string, pos int64) (map[string]bool, bool) {
	n.roomsMu.RLock()
	defer n.roomsMu.RUnlock()
	if n.lastPos < pos {
		return nil, false
	}
	sets := make([]map[string]struct{}, len(rooms))
	for i, r := range rooms {
		if sets[i] = n.rooms[r]; sets[i] == nil {
			return nil, false
		}
	}
	out := map[string]bool{}
	for _, u := range users {
		for _, set := range sets {
			if _, ok := set[u]; ok {
				out[u] = true
				break
			}
		}
	}
	return out, true
}
