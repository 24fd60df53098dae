// Package sync assembles /sync responses from storage by stream position and parks long polls until
// the notifier says something relevant to the user happened. It keeps no copy of events: every
// response is read from the one database (DESIGN.md, "Stream positions").
package sync

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/coalesce"
	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/presence"
	"github.com/hearthmx/homeserver/homeserver/receipt"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/typing"
)

// Service answers /sync.
type Service struct {
	store    *storage.Store
	rooms    *room.Service
	notifier *Notifier
	eph      Ephemeral
	log      *slog.Logger
	waiting  atomic.Int64
	builds   atomic.Int64 // responses built (tests)
	unread   unreadCache
	plans    planCache
	optIns   optInCache
	lazy     lazyCache
	acks     ackCache

	keys     *e2ee.Service
	toDevice *e2ee.ToDevice

	// Reads shared by the connections woken together: the stream positions (kept while nothing
	// was written, positions.go), and the events of rooms between two committed positions.
	positions  *positionCache
	roomEvents *coalesce.Cache[roomEventsKey, []storage.Event]
	states     *coalesce.Cache[stateKey, storage.StateMap]

	// Room sections built once for the users they fit (share.go); noShare turns them off (tests
	// compare with the per-user path), sharedUses counts the sections used.
	sections   *coalesce.Cache[sectionKey, *roomSection]
	noShare    atomic.Bool
	sharedUses atomic.Int64
	// recent are the events of the room writer's latest batches (recent.go).
	recent recentEvents
	// timelineReads counts readRoomEvents calls, timelineStoreReads those that read storage (tests).
	timelineReads      atomic.Int64
	timelineStoreReads atomic.Int64
	// lastToken is the last next_batch made (tokenText).
	lastToken atomic.Pointer[tokenString]
}

// stateKey is one read of StateAt.
type stateKey struct {
	room string
	pos  int64
}

// roomEventsKey is one read of RoomEventsBetween.
type roomEventsKey struct {
	rooms    string // room IDs joined by NUL
	from, to int64
	limit    int
}

// readRoomEvents is RoomEventsBetween shared with the other syncs reading the same range of the
// same rooms. Events in (from, to] are committed (to came from the counters, or from a row whose
// commit implies every position below it), so the answer is fixed, apart from redactions that
// commit later: those the reader gets as redaction events after to, as if it had read a little
// earlier. The events returned are shared: read, never modify them.
func (s *Service) readRoomEvents(ctx context.Context, c storage.Conn, roomIDs []string, from, to int64, limit int) ([]storage.Event, error) {
	if len(roomIDs) == 0 || limit <= 0 || to <= from {
		return nil, nil
	}
	s.timelineReads.Add(1)
	// Only while this node is the only writer: another node's redaction would not reach them.
	if s.notifier.alone.Load() {
		if evs, ok := s.recent.between(roomIDs, from, to, limit); ok {
			return evs, nil
		}
	}
	k := roomEventsKey{rooms: strings.Join(roomIDs, "\x00"), from: from, to: to, limit: limit}
	return s.roomEvents.Get(ctx, k, func(ctx context.Context) ([]storage.Event, error) {
		s.timelineStoreReads.Add(1)
		return c.RoomEventsBetween(ctx, roomIDs, from, to, limit)
	})
}

// Ephemeral are the services of the streams that are not room events: /sync reads typing and
// presence from them, and the client API's handlers of those streams reach them through Service.
type Ephemeral struct {
	Typing   *typing.Service
	Receipts *receipt.Service
	Presence *presence.Service
}

// New builds the service around a notifier (NewNotifier, built first so the ephemeral services can
// wake users through it); Close stops the notifier.
func New(store *storage.Store, rooms *room.Service, n *Notifier, eph Ephemeral, log *slog.Logger) *Service {
	s := &Service{store: store, rooms: rooms, notifier: n, eph: eph, log: log,
		roomEvents: coalesce.NewCache[roomEventsKey, []storage.Event](3*time.Second, 4096),
		states:     coalesce.NewCache[stateKey, storage.StateMap](3*time.Second, 256),
		sections:   coalesce.NewCache[sectionKey, *roomSection](sectionTTL, 4096)}
	if rooms != nil {
		// The writer's batches of plain messages keep the membership cache current and are the
		// recent events: woken syncs, whose positions follow this node's commits at once, do not
		// read them back (members.go, recent.go).
		rooms.OnBatch(func(b room.Batch) {
			if b.Last > 0 {
				n.members.applyQuiet(b.After, b.Last)
			}
			s.recent.batch(b)
		})
	}
	streams := append([]string{storage.StreamEvents, storage.StreamAccountData, storage.StreamReceipts}, e2eeStreams...)
	store.TrackPositions(streams...)
	version := func() uint64 {
		v := store.Unsure()
		if !n.alone.Load() {
			v += n.notices.Load() // the writes of other nodes
		}
		return v
	}
	s.positions = newPositionCache(version, store.WrittenPositions, store.WrittenGeneration, func(ctx context.Context) (map[string]int64, error) {
		return store.Read().Positions(ctx, streams...)
	})
	return s
}

// Close stops the notifier. Parked long polls keep waiting for their timeout or their client.
func (s *Service) Close() { s.notifier.Close() }

// Typing is the typing service (PUT /typing).
func (s *Service) Typing() *typing.Service { return s.eph.Typing }

// Receipts is the receipt service (POST /receipt, /read_markers).
func (s *Service) Receipts() *receipt.Service { return s.eph.Receipts }

// Presence is the presence service (PUT and GET /presence).
func (s *Service) Presence() *presence.Service { return s.eph.Presence }

// Notifier is the service's notifier (transports and tests wake users through it).
func (s *Service) Notifier() *Notifier { return s.notifier }

// Waiting is the number of long polls parked right now.
func (s *Service) Waiting() int64 { return s.waiting.Load() }

// Request is one /sync call.
type Request struct {
	UserID, Localpart, DeviceID string
	Since                       string // "" for an initial sync
	Timeout                     time.Duration
	FullState                   bool
	// Filter is not modified after the call: its plan is kept by the identity of its parts.
	Filter      filter.Filter
	SetPresence string // "", online, unavailable or offline
	// NoAck keeps the to-device messages before Since (SSE and WebSocket streams move Since
	// themselves; only a token the client presents proves it received them).
	NoAck bool
}

// Response is the /sync response body.
type Response struct {
	NextBatch   string    `json:"next_batch"`
	Rooms       Rooms     `json:"rooms"`
	Presence    EventList `json:"presence"`
	AccountData EventList `json:"account_data"`
	// The end-to-end encryption sections (left out when the server runs without them).
	ToDevice               *EventList     `json:"to_device,omitempty"`
	DeviceLists            *DeviceLists   `json:"device_lists,omitempty"`
	OneTimeKeysCount       map[string]int `json:"device_one_time_keys_count,omitzero"`
	UnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types,omitzero"`

	// delivered are, per joined room, the newest timeline event of the response that another
	// user sent: what a delivery receipt is recorded for once the response goes out (none when
	// the user is known not to send them).
	delivered []storage.Event
	// optIn is whether the user sends delivery receipts, when the build knew it (optUnknown if not),
	// and adPos the account data position of the response.
	optIn optIn
	adPos int64
	// countsJSON is OneTimeKeysCount encoded, when the build took both from the key count cache.
	countsJSON []byte
	// firstJoined is the first joined room's section, allocated with the response (an
	// incremental response nearly always has one room): newJoined.
	firstJoined     JoinedRoom
	firstJoinedUsed bool
}

// newJoined is a zero JoinedRoom for the response's next joined room.
func (r *Response) newJoined() *JoinedRoom {
	if !r.firstJoinedUsed {
		r.firstJoinedUsed = true
		return &r.firstJoined
	}
	return new(JoinedRoom)
}

// Rooms are the room sections by membership. A nil map is sent as an empty one (build makes only
// the maps it fills, nearly always Join alone).
type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Knock  map[string]*KnockedRoom `json:"knock"`
	Leave  map[string]*LeftRoom    `json:"leave"`
}

// MarshalJSON writes the nil maps as {}, as AppendJSON does.
func (r Rooms) MarshalJSON() ([]byte, error) {
	type plain Rooms
	p := plain(r)
	if p.Join == nil {
		p.Join = map[string]*JoinedRoom{}
	}
	if p.Invite == nil {
		p.Invite = map[string]*InvitedRoom{}
	}
	if p.Knock == nil {
		p.Knock = map[string]*KnockedRoom{}
	}
	if p.Leave == nil {
		p.Leave = map[string]*LeftRoom{}
	}
	return json.Marshal(p)
}

// EventList is {"events": [...]}; never null.
type EventList struct {
	Events []json.RawMessage `json:"events"`
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// JoinedRoom is rooms.join.<roomId>.
type JoinedRoom struct {
	Summary             *Summary  `json:"summary,omitempty"`
	State               EventList `json:"state"`
	Timeline            Timeline  `json:"timeline"`
	Ephemeral           EventList `json:"ephemeral"`
	AccountData         EventList `json:"account_data"`
	UnreadNotifications Unread    `json:"unread_notifications"`
	// UnreadThreadNotifications are per thread root, when the filter asks for them.
	UnreadThreadNotifications map[string]Unread `json:"unread_thread_notifications,omitempty"`

	// shared is State and Timeline encoded, when they come from a shared section (share.go).
	shared []byte
}

// Summary is a joined room's summary.
type Summary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  int      `json:"m.joined_member_count"`
	Invited int      `json:"m.invited_member_count"`
}

// Unread are the notification counts: until push rules exist, the messages of others after the
// user's read receipt, none of them highlighted.
type Unread struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

// InvitedRoom is rooms.invite.<roomId>.
type InvitedRoom struct {
	InviteState EventList `json:"invite_state"`
}

// KnockedRoom is rooms.knock.<roomId>.
type KnockedRoom struct {
	KnockState EventList `json:"knock_state"`
}

// LeftRoom is rooms.leave.<roomId>.
type LeftRoom struct {
	State       EventList `json:"state"`
	Timeline    Timeline  `json:"timeline"`
	AccountData EventList `json:"account_data"`
}

// Empty reports whether the response tells the client nothing new.
func (r *Response) Empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Knock) == 0 && len(r.Rooms.Leave) == 0 &&
		len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0 && r.ToDevice == nil && r.DeviceLists == nil
}

// Sync is GET /sync: an initial sync without Since; otherwise everything after Since, waiting up
// to Timeout for something to arrive. It returns the context's error when the client goes away.
func (s *Service) Sync(ctx context.Context, req Request) (*Response, error) {
	var since *Token
	if req.Since != "" {
		t, err := ParseToken(req.Since)
		if err != nil {
			return nil, err
		}
		since = &t
	}
	if p := s.eph.Presence; p != nil {
		defer p.Syncing(req.UserID, req.SetPresence)()
	}
	deadline := time.Now().Add(req.Timeout)
	for {
		l := s.notifier.Listen(req.UserID)
		if wait := time.Until(deadline); since != nil && !req.FullState && wait > 0 {
			idle, err := s.idle(ctx, since)
			if err != nil {
				l.Release()
				return nil, err
			}
			if idle {
				woken := s.park(ctx, l.C, wait)
				l.Release()
				if woken {
					continue
				}
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				// Timed out: the response says nothing new (or what arrived just now).
				resp, err := s.build(ctx, req, since)
				if err != nil {
					return nil, err
				}
				s.recordDelivery(req, resp)
				return resp, nil
			}
		}
		resp, err := s.build(ctx, req, since)
		if err != nil {
			l.Release()
			return nil, err
		}
		wait := time.Until(deadline)
		if since == nil || req.FullState || !resp.Empty() || wait <= 0 {
			l.Release()
			s.recordDelivery(req, resp)
			return resp, nil
		}
		if !s.park(ctx, l.C, wait) {
			l.Release()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return resp, nil // timed out: nothing new; next_batch may have moved past irrelevant events
		}
		l.Release()
	}
}

// idle reports whether every stream is where the token since says, so that a response built now
// would be empty: a long poll parks without building one (it used to build an empty response
// before every wait, half of the builds at fan-out). Only positions are compared; the streams the
// token does not cover follow them (membership changes are events, the one-time key counts are
// not news). Typing and presence are asked as build asks them.
func (s *Service) idle(ctx context.Context, since *Token) (bool, error) {
	pos, err := s.positions.Read(ctx)
	if err != nil {
		return false, err
	}
	if pos[storage.StreamEvents] != since.Events || pos[storage.StreamAccountData] != since.AccountData ||
		pos[storage.StreamReceipts] != since.Receipts || pos[storage.StreamToDevice] != since.ToDevice ||
		pos[storage.StreamDeviceLists] != since.DeviceLists {
		return false, nil
	}
	if s.eph.Typing != nil && s.eph.Typing.Position(since.Typing) != since.Typing {
		return false, nil
	}
	if s.eph.Presence != nil && s.eph.Presence.Position(since.Presence) != since.Presence {
		return false, nil
	}
	return true, nil
}

// park waits for a wake-up (true), the timeout or the end of ctx (false).
func (s *Service) park(ctx context.Context, wake <-chan struct{}, wait time.Duration) bool {
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	// Timers are reused: a stopped timer's channel delivers nothing stale after Reset (Go 1.23).
	t, _ := timers.Get().(*time.Timer)
	if t == nil {
		t = time.NewTimer(wait)
	} else {
		t.Reset(wait)
	}
	defer func() {
		t.Stop()
		timers.Put(t)
	}()
	select {
	case <-wake:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// timers are the stopped timers of parks that ended.
var timers gosync.Pool

// recordDelivery writes the delivery receipts of a response that is going out, off the request's
// path (until the notifier closes): a failure only delays the receipt to the next response.
func (s *Service) recordDelivery(req Request, resp *Response) {
	if s.eph.Receipts == nil || len(resp.delivered) == 0 || resp.optIn == optOff {
		return
	}
	s.deliver(receipt.User{UserID: req.UserID, Localpart: req.Localpart}, resp.delivered, resp.optIn, resp.adPos)
}

// deliver is the goroutine of recordDelivery (a function of its own: the closure would put every
// caller's Request on the heap, even those that return early).
func (s *Service) deliver(u receipt.User, evs []storage.Event, opt optIn, adPos int64) {
	s.notifier.background(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if opt == optUnknown {
			on, err := s.eph.Receipts.OptedIn(ctx, u.Localpart)
			if err != nil {
				s.log.Warn("delivery receipt", "user_id", u.UserID, "err", err)
				return
			}
			// Read after the counters of the response: the state at its position or newer.
			s.optIns.learn(u.Localpart, on, adPos)
			if !on {
				return
			}
		}
		if err := s.eph.Receipts.DeliveredOptedIn(ctx, u, evs); err != nil {
			s.log.Warn("delivery receipt", "user_id", u.UserID, "err", err)
		}
	})
}

// optIn is a user's choice about delivery receipts, as far as a sync knows it.
type optIn uint8

const (
	optUnknown optIn = iota
	optOff
	optOn
)

// optInCache keeps each syncing user's delivery receipt opt-in (global account data
// receipt.OptInType) with the account data position it is known at, so responses need not read it:
// a sync that continues from a position at or below that adds the account data it read since its
// token (everything the user changed up to the response's position) and knows it at the response's
// position.
type optInCache struct {
	mu gosync.Mutex
	m  map[string]optInEntry
}

type optInEntry struct {
	on  bool
	pos int64
}

// maxOptInEntries bounds the cache; when full it starts over.
const maxOptInEntries = 100_000

// known is the user's opt-in at account data position to, given the account data ads the user
// changed in (from, to].
func (c *optInCache) known(localpart string, from, to int64, ads []storage.AccountData) optIn {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[localpart]
	if !ok || e.pos < from {
		return optUnknown
	}
	if e.pos < to {
		for _, a := range ads {
			if a.RoomID == "" && a.Type == receipt.OptInType {
				e.on = receipt.OptInEnabled(a.Content)
			}
		}
		e.pos = to
		c.m[localpart] = e
	}
	if e.on {
		return optOn
	}
	return optOff
}

// learn records the opt-in read at account data position pos or later.
func (c *optInCache) learn(localpart string, on bool, pos int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[localpart]; ok && e.pos >= pos {
		return
	}
	if c.m == nil || len(c.m) >= maxOptInEntries {
		c.m = map[string]optInEntry{}
	}
	c.m[localpart] = optInEntry{on: on, pos: pos}
}
