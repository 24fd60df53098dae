// Package presence tracks whether users are online, unavailable or offline (module "Presence"),
// with their status message and last activity.
//
// The live state is small and changes often, so it lives in memory on every node and is shared
// over the bus (hs.presence): a node publishes a user's full state when it changes and, rate
// limited, as a heartbeat while the user syncs there. Every node applies what it hears, runs the
// same timeouts by itself (online → unavailable after idle_timeout without activity, → offline
// after offline_timeout without a sync), and stores explicit states in the database so a restart
// keeps status messages.
//
//	PUT /presence, /sync ── Set / Syncing ── apply ── publish ──► other nodes apply
//	                                           │
//	              change of presence or status_msg: new position, wake (rate limited) the users
//	              sharing a room, who read it in /sync's presence section
//
// Against presence storms (DESIGN.md, pitfalls): a heartbeat that does not change the state moves
// no position and wakes nobody (currently_active stays true while the user is online); wake-ups
// of one user's changes are at most one per wakeInterval, later ones wait for the sweep; the
// notifier handles a batch of them with one query; a sync reads the current state, so several
// changes between two syncs cost one event; and presence can be turned off.
//
// Positions come from a clock that follows wall-clock milliseconds and never repeats or goes back
// on a node, like typing's.
//
// Lock order: mu is never held while calling the waker, the bus or the database.
package presence

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	gosync "sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// States.
const (
	Online      = "online"
	Unavailable = "unavailable"
	Offline     = "offline"
)

// Visibility values of Options.Visibility.
const (
	VisibleSharedRooms = "shared_rooms" // GET /presence answers only users who share a room
	VisibleEveryone    = "everyone"     // any local user may GET anyone's presence
)

// wakeInterval is the least time between two wake-ups for one user's presence changes.
const wakeInterval = time.Second

// Options configure presence (the presence section of the configuration).
type Options struct {
	Enabled        bool
	Visibility     string
	IdleTimeout    time.Duration
	OfflineTimeout time.Duration
}

// Waker wakes the syncing users who share a room with the given users, and the users themselves
// (the sync notifier).
type Waker interface{ WakeSharing(userIDs ...string) }

// Service is the presence state of this node.
type Service struct {
	opts  Options
	store *storage.Store
	bus   *bus.Bus
	node  string
	wake  Waker
	log   *slog.Logger
	fed   Federation // nil: no federation (remote.go)

	mu    gosync.Mutex
	users map[string]*state
	clock int64 // the last position handed out
	// changes lists (position, user) of every change in position order, so that Changed reads
	// only the users changed after a token instead of every user; it covers positions after
	// changesFrom (older tokens scan every user).
	changes     []change
	changesFrom int64
	waiting     map[string]struct{} // users with a change whose wake-up waits for wakeInterval
	dirty       map[string]struct{} // users whose state is to be stored

	kick chan struct{} // to the writer
	stop chan struct{}
	sub  interface{ Unsubscribe() error }
	wg   gosync.WaitGroup
}

// state is one user's presence.
type state struct {
	presence   string
	statusMsg  string
	lastActive int64 // unix ms of the last activity
	lastSync   int64 // unix ms of the last sync seen
	pos        int64 // position of the last change of presence or status_msg

	syncing   int   // syncs in progress on this node
	lastWake  int64 // unix ms
	lastBeat  int64 // unix ms of the last publication
	everKnown bool  // set, synced or loaded at least once

	// remote: a user of another server (remote.go), whose state only its server changes: no
	// timeouts here, not stored; active is its currently_active as that server said.
	remote bool
	active bool
}

// wireState is the bus message: a user's full state.
type wireState struct {
	UserID       string `json:"user_id"`
	Presence     string `json:"presence"`
	StatusMsg    string `json:"status_msg,omitempty"`
	LastActiveTS int64  `json:"last_active_ts"`
	LastSyncTS   int64  `json:"last_sync_ts"`
	Node         string `json:"node"`
	Remote       bool   `json:"remote,omitempty"`
	Active       bool   `json:"currently_active,omitempty"` // of a remote user
}

// New loads the stored presence, subscribes to the bus (b may be nil) and starts the sweep and the
// writer. With presence disabled it does none of that.
func New(ctx context.Context, opts Options, store *storage.Store, b *bus.Bus, node string, wake Waker, log *slog.Logger) (*Service, error) {
	s := &Service{opts: opts, store: store, bus: b, node: node, wake: wake, log: log, users: map[string]*state{},
		waiting: map[string]struct{}{}, dirty: map[string]struct{}{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	if !opts.Enabled {
		return s, nil
	}
	rows, err := store.Read().AllPresence(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	s.clock = now
	for _, r := range rows {
		// A restart is not the users' fault: they get offline_timeout to come back.
		s.users[r.UserID] = &state{presence: r.Presence, statusMsg: r.StatusMsg, lastActive: r.LastActiveTS,
			lastSync: now, pos: now, everKnown: true}
	}
	s.changesFrom = now // the restored states are not in changes: older tokens scan them all
	if b != nil {
		sub, err := b.Subscribe(bus.SubjectPresence, s.receive)
		if err != nil {
			return nil, err
		}
		s.sub = sub
	}
	s.wg.Add(2)
	go s.sweepLoop()
	go s.writer()
	return s, nil
}

// Close stops the subscription, the sweep and the writer (after a last write).
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

// Enabled reports whether presence is tracked.
func (s *Service) Enabled() bool { return s.opts.Enabled }

// user returns the state of a user, created offline. mu must be held.
func (s *Service) user(id string) *state {
	st := s.users[id]
	if st == nil {
		st = &state{presence: Offline}
		s.users[id] = st
	}
	return st
}

// next hands out a new position. mu must be held.
// change is one entry of Service.changes.
type change struct {
	pos int64
	id  string
}

// maxChanges bounds Service.changes; past it the older half is dropped.
const maxChanges = 1 << 16

// logChange records a user's new position. mu must be held.
func (s *Service) logChange(pos int64, id string) {
	if len(s.changes) >= maxChanges {
		half := len(s.changes) / 2
		s.changesFrom = s.changes[half-1].pos
		s.changes = append(s.changes[:0:0], s.changes[half:]...)
	}
	s.changes = append(s.changes, change{pos: pos, id: id})
}

// changedSince lists the users whose position is after since (each once). mu must be held.
func (s *Service) changedSince(since int64) []string {
	if since < s.changesFrom {
		var ids []string
		for id, st := range s.users {
			if st.pos > since && st.everKnown {
				ids = append(ids, id)
			}
		}
		return ids
	}
	i := sort.Search(len(s.changes), func(i int) bool { return s.changes[i].pos > since })
	var ids []string
	seen := make(map[string]struct{}, len(s.changes)-i)
	for _, c := range s.changes[i:] {
		if _, dup := seen[c.id]; dup {
			continue
		}
		seen[c.id] = struct{}{}
		if st := s.users[c.id]; st != nil && st.pos > since && st.everKnown {
			ids = append(ids, c.id)
		}
	}
	return ids
}

func (s *Service) next(nowMS int64) int64 {
	s.clock = max(s.clock+1, nowMS)
	return s.clock
}

// effects are what a change asks for once mu is released.
type effects struct {
	wake    []string
	publish []wireState
	fed     []fedNotice
}

func (s *Service) run(e effects) {
	if len(e.wake) > 0 {
		s.wake.WakeSharing(e.wake...)
	}
	for _, n := range e.fed {
		s.fed.Presence(n.userID, n.status)
	}
	if s.bus == nil {
		return
	}
	for _, w := range e.publish {
		data, _ := json.Marshal(w)
		if err := s.bus.Publish(bus.SubjectPresence, data); err != nil {
			s.log.Warn("presence: publish", "err", err)
		}
	}
}

// set changes a user's presence and status message; a change moves the position, schedules a
// wake-up and, when store, a write. mu must be held.
func (s *Service) set(e *effects, id string, st *state, presence, msg string, now int64, store bool) bool {
	st.everKnown = true
	if st.presence == presence && st.statusMsg == msg {
		return false
	}
	st.presence, st.statusMsg = presence, msg
	s.touch(e, id, st, now, store)
	return true
}

// touch records a change of a user's state: a new position, a wake-up and, when store, a write.
// mu must be held.
func (s *Service) touch(e *effects, id string, st *state, now int64, store bool) {
	st.pos = s.next(now)
	s.logChange(st.pos, id)
	if now-st.lastWake >= wakeInterval.Milliseconds() {
		st.lastWake = now
		e.wake = append(e.wake, id)
	} else {
		s.waiting[id] = struct{}{}
	}
	if store {
		s.dirty[id] = struct{}{}
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

func (s *Service) wire(id string, st *state) wireState {
	return wireState{UserID: id, Presence: st.presence, StatusMsg: st.statusMsg, LastActiveTS: st.lastActive,
		LastSyncTS: st.lastSync, Node: s.node, Remote: st.remote, Active: st.remote && st.active}
}

// Set is PUT /presence/{userId}/status for the caller: the new state and status message ("" for
// none). Setting a state counts as activity. With presence disabled it does nothing.
func (s *Service) Set(ctx context.Context, userID, presence, statusMsg string) error {
	return s.update(userID, presence, func(e *effects, st *state, now int64) {
		st.remote = false // a user of this server, whatever was heard
		st.lastActive = now
		st.lastSync = max(st.lastSync, now)
		if s.set(e, userID, st, presence, statusMsg, now, true) {
			s.tellFederation(e, userID, st, now)
		}
		st.lastBeat = now
	})
}

// update checks presence (online, unavailable or offline; M_INVALID_PARAM otherwise) and, with
// presence enabled, runs apply on userID's state with mu held, then publishes that state.
func (s *Service) update(userID, presence string, apply func(e *effects, st *state, now int64)) error {
	switch presence {
	case Online, Unavailable, Offline:
	default:
		return spec.ErrInvalidParam.With("presence must be online, unavailable or offline")
	}
	if !s.opts.Enabled {
		return nil
	}
	now := time.Now().UnixMilli()
	var e effects
	s.mu.Lock()
	st := s.user(userID)
	apply(&e, st, now)
	e.publish = append(e.publish, s.wire(userID, st))
	s.mu.Unlock()
	s.run(e)
	return nil
}

// Syncing records a /sync of the user with its set_presence parameter ("" is online): a sync is
// activity unless set_presence is unavailable, and sets the state it names; offline leaves the
// user alone. Call the returned function when the sync returns.
func (s *Service) Syncing(userID, setPresence string) (done func()) {
	if !s.opts.Enabled || setPresence == Offline {
		return func() {}
	}
	now := time.Now().UnixMilli()
	var e effects
	s.mu.Lock()
	st := s.user(userID)
	st.remote = false
	st.syncing++
	st.lastSync = now
	target := Online
	if setPresence == Unavailable {
		target = Unavailable
	} else {
		st.lastActive = now
	}
	changed := s.set(&e, userID, st, target, st.statusMsg, now, true)
	if changed {
		s.tellFederation(&e, userID, st, now)
	}
	if changed || now-st.lastBeat >= s.beatInterval().Milliseconds() {
		st.lastBeat = now
		e.publish = append(e.publish, s.wire(userID, st))
	}
	s.mu.Unlock()
	s.run(e)
	var once gosync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			st.syncing--
			st.lastSync = max(st.lastSync, time.Now().UnixMilli())
			s.mu.Unlock()
		})
	}
}

// beatInterval is how often a user syncing on this node is announced to the other nodes: often
// enough that none of them times the user out.
func (s *Service) beatInterval() time.Duration {
	return max(min(s.opts.IdleTimeout, s.opts.OfflineTimeout)/3, 10*time.Millisecond)
}

func (s *Service) receive(data []byte) {
	var w wireState
	if err := json.Unmarshal(data, &w); err != nil || w.UserID == "" {
		s.log.Warn("presence: bad message", "data", string(data))
		return
	}
	if w.Node == s.node {
		return
	}
	now := time.Now().UnixMilli()
	var e effects
	s.mu.Lock()
	st := s.user(w.UserID)
	if w.Remote {
		s.applyRemote(&e, w.UserID, st, w.Presence, w.StatusMsg, w.LastActiveTS, w.Active, now)
		s.mu.Unlock()
		s.run(e)
		return
	}
	st.lastActive = max(st.lastActive, w.LastActiveTS)
	st.lastSync = max(st.lastSync, w.LastSyncTS)
	s.set(&e, w.UserID, st, w.Presence, w.StatusMsg, now, false)
	s.mu.Unlock()
	s.run(e)
}

// sweepLoop applies the timeouts and the delayed wake-ups.
func (s *Service) sweepLoop() {
	defer s.wg.Done()
	tick := min(max(min(s.opts.IdleTimeout, s.opts.OfflineTimeout)/10, 20*time.Millisecond), 250*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sweep(time.Now().UnixMilli())
		}
	}
}

// sweep moves users past their timeouts and sends the wake-ups that waited.
func (s *Service) sweep(now int64) {
	idle, offline := s.opts.IdleTimeout.Milliseconds(), s.opts.OfflineTimeout.Milliseconds()
	var e effects
	s.mu.Lock()
	for id, st := range s.users {
		if st.remote {
			continue // its server says when it changes
		}
		if st.syncing > 0 {
			st.lastSync = now // a parked long poll keeps the user connected
			if now-st.lastBeat >= s.beatInterval().Milliseconds() {
				st.lastBeat = now
				e.publish = append(e.publish, s.wire(id, st))
			}
			continue
		}
		changed := false
		switch {
		case st.presence != Offline && now-st.lastSync > offline:
			changed = s.set(&e, id, st, Offline, st.statusMsg, now, true)
		case st.presence == Online && now-st.lastActive > idle:
			changed = s.set(&e, id, st, Unavailable, st.statusMsg, now, true)
		}
		// Every node times its users out; those that announced the user (who was active here)
		// tell federation.
		if changed && st.lastBeat > 0 {
			s.tellFederation(&e, id, st, now)
		}
	}
	for id := range s.waiting {
		st := s.users[id]
		if now-st.lastWake >= wakeInterval.Milliseconds() {
			st.lastWake = now
			e.wake = append(e.wake, id)
			delete(s.waiting, id)
		}
	}
	s.mu.Unlock()
	s.run(e)
}

// writer stores the states that changed, coalescing changes that arrive while it writes.
func (s *Service) writer() {
	defer s.wg.Done()
	for {
		stopping := false
		select {
		case <-s.kick:
		case <-s.stop:
			stopping = true
		}
		s.mu.Lock()
		rows := make([]storage.PresenceRow, 0, len(s.dirty))
		for id := range s.dirty {
			st := s.users[id]
			rows = append(rows, storage.PresenceRow{UserID: id, Presence: st.presence, StatusMsg: st.statusMsg, LastActiveTS: st.lastActive})
		}
		clear(s.dirty)
		s.mu.Unlock()
		if len(rows) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := s.store.Write(ctx, func(c storage.Conn) error {
				for _, r := range rows {
					if err := c.PutPresence(ctx, r); err != nil {
						return err
					}
				}
				return nil
			})
			cancel()
			if err != nil {
				s.log.Warn("presence: store", "err", err)
			}
		}
		if stopping {
			return
		}
	}
}

// Status is a user's presence as GET /presence and m.presence events show it.
type Status struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

// status renders a state at now. mu must be held.
func status(st *state, now int64) Status {
	out := Status{Presence: st.presence}
	if st.lastActive > 0 {
		ago := max(now-st.lastActive, 0)
		out.LastActiveAgo = &ago
	}
	if st.statusMsg != "" {
		msg := st.statusMsg
		out.StatusMsg = &msg
	}
	active := st.presence == Online
	if st.remote {
		active = st.active
	}
	out.CurrentlyActive = &active
	return out
}

// Get is GET /presence/{userId}/status: M_FORBIDDEN unless the viewer is the user, shares a room
// with them, or the configuration lets everyone see presence. A user without presence is offline.
func (s *Service) Get(ctx context.Context, viewer, userID string) (Status, error) {
	if viewer != userID && s.opts.Visibility != VisibleEveryone {
		ok, err := s.store.Read().ShareRoom(ctx, viewer, userID)
		if err != nil {
			return Status{}, err
		}
		if !ok {
			return Status{}, spec.ErrForbidden.With("You are not allowed to see their presence")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.users[userID]
	if !s.opts.Enabled || st == nil || !st.everKnown {
		return Status{Presence: Offline}, nil
	}
	return status(st, time.Now().UnixMilli()), nil
}

// Position is the latest position handed out (a sync token's presence part), at least since so
// that this node's positions never fall behind a token another node handed out.
func (s *Service) Position(since int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock = max(s.clock, since)
	return s.clock
}

// Event is one m.presence event of /sync.
type Event struct {
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content Status `json:"content"`
}

// Changed returns the m.presence events of the users who share a room with viewer (viewer
// included) whose presence changed after position since, up to position upTo. It reads the
// database only when something changed.
//
// sharing, when not nil, may answer which of the users changed share a room with viewer without
// reading the database (ok false: read it).
func (s *Service) Changed(ctx context.Context, viewer string, since, upTo int64,
	sharing func(users []string) (shared map[string]bool, ok bool)) ([]Event, error) {
	if !s.opts.Enabled || since >= upTo {
		return nil, nil
	}
	s.mu.Lock()
	ids := s.changedSince(since)
	s.mu.Unlock()
	if len(ids) == 0 {
		return nil, nil
	}
	share, ok := map[string]bool(nil), false
	if sharing != nil {
		share, ok = sharing(ids)
	}
	if !ok {
		shared, err := s.store.Read().UsersSharingRoomWith(ctx, viewer)
		if err != nil {
			return nil, err
		}
		share = make(map[string]bool, len(shared)+1)
		for _, u := range shared {
			share[u] = true
		}
	}
	share[viewer] = true
	now := time.Now().UnixMilli()
	var out []Event
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if share[id] {
			out = append(out, Event{Type: "m.presence", Sender: id, Content: status(s.users[id], now)})
		}
	}
	return out, nil
}
