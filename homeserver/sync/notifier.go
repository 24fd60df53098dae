package sync

import (
	"context"
	"encoding/json"
	"log/slog"
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Notifier wakes the long polls of users when something relevant to them happens. It carries no
// data: a woken sync reads storage again from its token, so a lost race costs a wasted read, never
// a lost event.
//
//	room writer ── hs.room.<id> {room_id,pos} ──┐   (core NATS: every node sees every notice)
//	account    ── hs.account_data {user,pos} ───┤
//	                                            ▼
//	        subscription callback: append to pending, kick the worker (never blocks)
//	                                            ▼
//	        worker: drain pending; one query for the membership events up to the highest
//	        position; update room → joined users; wake the joined users of each room, the
//	        targets of membership events and the owners of account data
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

	mu    gosync.Mutex
	users map[string]*signal // users with at least one parked long poll

	pendingMu gosync.Mutex
	pending   []notice
	kick      chan struct{}

	// Owned by the worker goroutine.
	rooms   map[string]map[string]struct{} // room → joined users
	lastPos int64                          // membership events applied up to here

	subs []interface{ Unsubscribe() error }
	stop chan struct{}
	wg   gosync.WaitGroup
}

// signal is one user's wake-up channel: closed on a wake-up and replaced.
type signal struct {
	ch      chan struct{}
	waiters int
}

// notice is one message of the bus: a room event (RoomID set) or a user's account data.
type notice struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Pos    int64  `json:"pos"`
}

// NewNotifier subscribes to the bus (nil: no subscriptions, for tests that call Wake directly) and
// starts the worker; Close stops both.
func NewNotifier(ctx context.Context, store *storage.Store, b *bus.Bus, log *slog.Logger) (*Notifier, error) {
	pos, err := store.Read().Position(ctx, storage.StreamEvents)
	if err != nil {
		return nil, err
	}
	n := &Notifier{store: store, log: log, users: map[string]*signal{}, kick: make(chan struct{}, 1),
		rooms: map[string]map[string]struct{}{}, lastPos: pos, stop: make(chan struct{})}
	if b != nil {
		for _, subject := range []string{bus.SubjectRoomEvents, bus.SubjectAccountData} {
			sub, err := b.Subscribe(subject, n.receive)
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
}

// Listen returns the channel that is closed at the user's next wake-up, and a release function to
// call when the caller stops waiting.
func (n *Notifier) Listen(userID string) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.users[userID]
	if s == nil {
		s = &signal{ch: make(chan struct{})}
		n.users[userID] = s
	}
	s.waiters++
	ch := s.ch
	var once gosync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			if s.waiters--; s.waiters == 0 && n.users[userID] == s {
				delete(n.users, userID)
			}
		})
	}
}

// Wake wakes the long polls of the users (those not waiting cost nothing).
func (n *Notifier) Wake(users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		if s := n.users[u]; s != nil {
			close(s.ch)
			s.ch = make(chan struct{})
		}
	}
}

// wakeAll wakes every waiting user (when the index cannot be trusted).
func (n *Notifier) wakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.users {
		close(s.ch)
		s.ch = make(chan struct{})
	}
}

// receive is the bus callback: queue and return.
func (n *Notifier) receive(data []byte) {
	var m notice
	if err := json.Unmarshal(data, &m); err != nil || m.RoomID == "" && m.UserID == "" {
		n.log.Warn("sync notifier: bad notice", "data", string(data))
		return
	}
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
	for _, m := range batch {
		if m.RoomID != "" {
			roomsHit[m.RoomID] = struct{}{}
			maxPos = max(maxPos, m.Pos)
		} else {
			wake[m.UserID] = struct{}{}
		}
	}
	trusted := true
	if maxPos > n.lastPos {
		changes, err := n.store.Read().MembershipChangesBetween(ctx, n.lastPos, maxPos)
		if err != nil {
			n.log.Error("sync notifier: read membership changes", "err", err)
			trusted = false
		} else {
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
		}
	}
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
			n.rooms[roomID] = members
		}
		for u := range members {
			wake[u] = struct{}{}
		}
	}
	if !trusted {
		n.wakeAll()
		return
	}
	users := make([]string, 0, len(wake))
	for u := range wake {
		users = append(users, u)
	}
	n.Wake(users...)
}
