// Package typing keeps who is typing in which room (module "Typing Notifications"). The state is
// small and short-lived, so it lives in memory on every node; nodes share it over the bus:
//
//	PUT /typing ── Set ── apply locally ── publish hs.typing {room, user, typing, expires_ms, node}
//	                                              │
//	                    other nodes: receive ── apply (the same map everywhere)
//	                                              │
//	every node: its expiry loop drops users whose expires_ms passed, by itself
//
// Every change of a room's list, expiry included, gets a new position of the typing stream and
// wakes the room's syncing members, so clients are told when the list becomes empty (DESIGN.md,
// pitfalls). Positions come from a clock that follows wall-clock milliseconds and never repeats
// or goes back on a node, so a token handed out by one node still makes sense on another one or
// after a restart. A refresh that does not change the list (the same user typing again) moves
// nothing and wakes nobody.
//
// Lock order: mu is never held while calling the waker or the bus.
package typing

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	gosync "sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Timeouts of PUT /typing: the default when typing without one, and the longest accepted.
const (
	DefaultTimeout = 30 * time.Second
	MaxTimeout     = 2 * time.Minute
)

// Waker wakes the syncing members of a room (the sync notifier).
type Waker interface{ WakeRoom(roomID string) }

// Members answers a user's current membership in a room (the room service).
type Members interface {
	CurrentMembership(ctx context.Context, roomID, userID string) (string, error)
}

// Service is the typing state of this node.
type Service struct {
	bus     *bus.Bus
	node    string
	wake    Waker
	members Members
	log     *slog.Logger
	fed     Federation // nil: no federation (remote.go)

	mu    gosync.Mutex
	rooms map[string]*room
	clock int64 // the last position handed out

	kick chan struct{}
	stop chan struct{}
	sub  interface{ Unsubscribe() error }
	wg   gosync.WaitGroup
}

// room is the typing state of one room.
type room struct {
	users map[string]int64 // user → expiry, unix ms
	pos   int64            // position of the last change of the list
	// local holds the users typing through Set on this node, with when federation was last told
	// (unix ms): this node alone tells other servers about them (remote.go).
	local map[string]int64
}

// wire is the bus message.
type wire struct {
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Typing    bool   `json:"typing"`
	ExpiresMS int64  `json:"expires_ms"`
	Node      string `json:"node"`
}

// New starts the service: its bus subscription (b may be nil) and its expiry loop. node names
// this node, so it can skip its own messages.
func New(b *bus.Bus, node string, wake Waker, members Members, log *slog.Logger) (*Service, error) {
	s := &Service{bus: b, node: node, wake: wake, members: members, log: log, rooms: map[string]*room{},
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
	if b != nil {
		sub, err := b.Subscribe(bus.SubjectTyping, s.receive)
		if err != nil {
			return nil, err
		}
		s.sub = sub
	}
	s.wg.Add(1)
	go s.expiryLoop()
	return s, nil
}

// Close stops the subscription and the expiry loop.
func (s *Service) Close() {
	if s.sub != nil {
		_ = s.sub.Unsubscribe()
		s.sub = nil
	}
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

// Set is PUT /rooms/{roomId}/typing/{userId} for the caller userID: typing for timeout (0: the
// default; capped at MaxTimeout), or stopped. Only members joined to the room may type.
func (s *Service) Set(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error {
	m, err := s.members.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != "join" {
		return spec.ErrForbidden.With("You are not joined to this room")
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	w := wire{RoomID: roomID, UserID: userID, Typing: typing, Node: s.node}
	if typing {
		w.ExpiresMS = time.Now().Add(min(timeout, MaxTimeout)).UnixMilli()
	}
	s.apply(w, true)
	s.publish(w)
	if s.fed != nil {
		s.fed.Typing(roomID, userID, typing)
	}
	return nil
}

// publish shares a change with the other nodes.
func (s *Service) publish(w wire) {
	if s.bus == nil {
		return
	}
	data, _ := json.Marshal(w)
	if err := s.bus.Publish(bus.SubjectTyping, data); err != nil {
		s.log.Warn("typing: publish", "err", err)
	}
}

func (s *Service) receive(data []byte) {
	var w wire
	if err := json.Unmarshal(data, &w); err != nil || w.RoomID == "" || w.UserID == "" {
		s.log.Warn("typing: bad message", "data", string(data))
		return
	}
	if w.Node == s.node {
		return // applied when sent
	}
	s.apply(w, false)
}

// apply changes the map, and on a change of the list moves the room's position and wakes its
// members. local is a change made by Set on this node (which has told federation).
func (s *Service) apply(w wire, local bool) {
	s.mu.Lock()
	r := s.rooms[w.RoomID]
	if r == nil {
		r = &room{users: map[string]int64{}, local: map[string]int64{}}
		s.rooms[w.RoomID] = r
	}
	_, was := r.users[w.UserID]
	now := time.Now().UnixMilli()
	typing := w.Typing && w.ExpiresMS > now
	if typing {
		r.users[w.UserID] = w.ExpiresMS
	} else {
		delete(r.users, w.UserID)
	}
	if typing && local && s.fed != nil {
		r.local[w.UserID] = now
	} else {
		delete(r.local, w.UserID)
	}
	changed := was != typing
	if changed {
		r.pos = s.next(now)
	}
	s.mu.Unlock()
	if typing {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if changed {
		s.wake.WakeRoom(w.RoomID)
	}
}

// next hands out a new position: wall-clock milliseconds, or one more than the last one.
func (s *Service) next(nowMS int64) int64 {
	s.clock = max(s.clock+1, nowMS)
	return s.clock
}

// Position is the latest position handed out (a sync token's typing part). It is at least since,
// so the positions of this node never fall behind a token another node handed out.
func (s *Service) Position(since int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock = max(s.clock, since)
	return s.clock
}

// Changed returns, for those of roomIDs whose list changed after position since, the users typing
// now (sorted; possibly empty). With since 0 (a client that has nothing yet) only non-empty lists
// are returned.
func (s *Service) Changed(roomIDs []string, since int64) map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[string][]string
	for _, id := range roomIDs {
		r := s.rooms[id]
		if r == nil || r.pos <= since || since == 0 && len(r.users) == 0 {
			continue
		}
		users := make([]string, 0, len(r.users))
		for u := range r.users {
			users = append(users, u)
		}
		slices.Sort(users)
		if out == nil {
			out = map[string][]string{}
		}
		out[id] = users
	}
	return out
}

// Typing returns the users typing now in a room (sorted).
func (s *Service) Typing(roomID string) []string {
	return s.Changed([]string{roomID}, -1)[roomID]
}

// expiryLoop drops expired users when the earliest expiry passes; Set kicks it when a new expiry
// may be earlier.
func (s *Service) expiryLoop() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := s.expire()
		wait := time.Hour
		if next > 0 {
			wait = time.Until(time.UnixMilli(next))
		}
		t.Reset(max(wait, time.Millisecond))
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-t.C:
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// expire drops the users whose typing expired, wakes their rooms, tells federation about this
// node's users (stopped, or still typing: refreshed), and returns the earliest time it has
// something to do again (0 for none).
func (s *Service) expire() int64 {
	now := time.Now().UnixMilli()
	var woken []string
	var notices []notice
	var next int64
	earliest := func(t int64) {
		if next == 0 || t < next {
			next = t
		}
	}
	s.mu.Lock()
	for id, r := range s.rooms {
		changed := false
		for u, exp := range r.users {
			if exp <= now {
				delete(r.users, u)
				changed = true
			} else {
				earliest(exp)
			}
		}
		if changed {
			r.pos = s.next(now)
			woken = append(woken, id)
		}
		notices = s.refresh(notices, id, r, now, earliest)
	}
	s.mu.Unlock()
	for _, id := range woken {
		s.wake.WakeRoom(id)
	}
	for _, n := range notices {
		s.fed.Typing(n.roomID, n.userID, n.typing)
	}
	return next
}
