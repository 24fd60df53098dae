package sync

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Room sections shared by the users woken for the same change. When a message arrives in a room,
// every member's sync continues from the same token to the same position, usually with the same
// filter, and each used to pick the same timeline, turn the same events into the same client
// events and encode the same JSON. Now the first of them builds the room's "state" and "timeline"
// members once per (room, range of positions, timeline and state filter), encoded, and the
// others copy the bytes. The rest of a joined room (summary, ephemeral, account_data, unread
// counts) and the delivery receipts stay per user.
//
// The shared section is what the per-user path gives a user who
//   - was joined to the room at the start of the range and still is: every event of the range is
//     visible to them (no history visibility to apply), and the room continues from their token
//     (no membership change of theirs inside the range, which would send the full state);
//   - has every event of the range read already (the section is built from the same events);
//   - sent none of its events from this device (those carry unsigned.transaction_id);
//   - lazy-loading members, has the member events of the timeline's senders already and the
//     timeline covers the whole range (otherwise the state section holds members for them).
//
// Sections whose events have bundled relations (threads, edits, references: they depend on who
// reads) are used by nobody. The unsigned.age of a shared section's events is their age when the
// section was built, at most sectionTTL earlier than a build of the user's own.
// Everyone else, and every user in any doubt, takes the per-user path.

// sectionTTL is how long a built section is kept for the users woken a little later.
const sectionTTL = time.Second

// sectionKey names one shared section. filter is plan.shareKey.
type sectionKey struct {
	room     string
	from, to int64
	filter   string
}

// roomSection is a room's timeline and state sections as the users that fit it get them. It is
// shared: read it, never modify it.
type roomSection struct {
	unusable bool // bundled relations: nobody may use it

	picked         []storage.Event // the timeline, oldest first
	limited        bool
	membersChanged bool
	startPos       int64 // the position before the timeline's first event
	delta          bool  // the state section is a delta (not left empty because the timeline covers the range)
	summary        bool  // the room gets a summary
	empty          bool  // no timeline or state event, not limited: nothing to send for the room itself

	timeline Timeline
	state    EventList
	encoded  []byte // `"state":…,"timeline":…` as JoinedRoom.appendJSON writes them

	// txn are the (sender, device) pairs of the events with a transaction ID: that device's
	// client events carry it.
	txn []senderDevice

	// raw are the room's events of the range, as the job that built the section read them: a
	// user who takes the section without reading them (peekSection) gets these.
	raw []storage.Event
}

type senderDevice struct{ user, device string }

// shareable reports whether a room job may use a shared section: a joined room continuing from
// the token since with new events, all of them read, of a user joined before the range (implied
// by the rest: a membership newer than since starts its room from scratch; stated because
// visibility depends on it).
func (s *Service) shareable(j *roomJob, since int64) bool {
	return s.mayShare(j, since) && j.scanned <= j.from && len(j.raw) > 0
}

// mayShare is shareable before the room's events are read.
func (s *Service) mayShare(j *roomJob, since int64) bool {
	return !s.noShare.Load() && since > 0 && !j.leave && !j.full && j.from == since && j.to > j.from &&
		j.m.Membership == room.MembershipJoin && j.m.StreamPos <= j.from
}

// peekSection gives a job that may share the section already built for its room and range, if
// there is one and it fits the user, and then the events it was built from: the user's own read
// of them (a bulk read and a lookup in its cache, ~4 % of a woken long poll's CPU) is skipped.
// The section's events are those the job would read: the same room and range, all of them (a
// section is only built from a complete read).
func (s *Service) peekSection(req Request, p *plan, j *roomJob, since int64) bool {
	if !s.mayShare(j, since) {
		return false
	}
	sec, ok := s.sections.Peek(sectionKey{room: j.m.RoomID, from: j.from, to: j.to, filter: p.shareKey})
	if !ok || !s.fits(req, p, j, sec, since) {
		return false
	}
	j.raw, j.scanned = sec.raw, j.from
	j.sec, j.picked, j.limited, j.membersChanged = sec, sec.picked, sec.limited, sec.membersChanged
	return true
}

// section returns the shared section of a shareable job if it is exactly what the user's own
// build would give, else nil.
func (s *Service) section(ctx context.Context, c storage.Conn, req Request, p *plan, j *roomJob, since int64) (*roomSection, error) {
	sec, err := s.sections.Get(ctx, sectionKey{room: j.m.RoomID, from: j.from, to: j.to, filter: p.shareKey},
		func(ctx context.Context) (*roomSection, error) { return s.buildSection(ctx, c, p, j, since) })
	if err != nil || !s.fits(req, p, j, sec, since) {
		return nil, err
	}
	return sec, nil
}

// fits reports whether the user may take sec as their own build of the job (and counts it).
func (s *Service) fits(req Request, p *plan, j *roomJob, sec *roomSection, since int64) bool {
	if sec.unusable {
		return false
	}
	for _, sd := range sec.txn {
		if sd.user == req.UserID && sd.device == req.DeviceID {
			return false
		}
	}
	if p.lazyMembers {
		if sec.delta {
			return false
		}
		j.picked = sec.picked
		done := s.lazyDone(req, j, since, sec.startPos)
		j.picked = nil
		if !done {
			return false
		}
	}
	s.sharedUses.Add(1)
	return true
}

// buildSection builds the section of a shareable job from its events as nobody in particular:
// history visibility, transaction IDs and lazy-loaded members do not enter it (section checks
// that they would not for the user).
func (s *Service) buildSection(ctx context.Context, c storage.Conn, shared *plan, j *roomJob, since int64) (*roomSection, error) {
	p := new(plan)
	*p = *shared
	p.lazyMembers = false
	b := &roomJob{m: j.m, from: j.from, to: j.to, raw: j.raw, scanned: j.scanned}
	if err := s.pick(ctx, c, Request{}, p, b); err != nil {
		return nil, err
	}
	if err := s.stateOf(ctx, c, Request{}, p, b, since); err != nil {
		return nil, err
	}
	var st []storage.Event
	if len(b.state) > 0 {
		evs, err := c.Events(ctx, b.state)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if p.state.event(&e) {
				st = append(st, e)
			}
		}
		slices.SortFunc(st, func(a, b storage.Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	}
	all := append(slices.Clip(b.picked), st...)
	client, err := s.rooms.ClientEventsUpTo(ctx, room.Reader{}, all, j.to)
	if err != nil {
		return nil, err
	}
	// Bundled relations are per reader, and exist only for events with children: the section is
	// shared only if the conversion found none (the same read, not a second one: at fan-out it
	// was one more query per message before any response could go out).
	sec := &roomSection{picked: b.picked, limited: b.limited, membersChanged: b.membersChanged, raw: slices.Clip(j.raw)}
	for _, e := range all {
		if e.TxnID != "" && !slices.Contains(sec.txn, senderDevice{e.Sender, e.TxnDevice}) {
			sec.txn = append(sec.txn, senderDevice{e.Sender, e.TxnDevice})
		}
	}
	children, err := s.rooms.ChildrenUpTo(ctx, all, j.to)
	if err != nil {
		return nil, err
	}
	if len(children) > 0 {
		return &roomSection{unusable: true}, nil
	}
	inTimeline := make(map[string]bool, len(b.picked))
	for _, e := range b.picked {
		inTimeline[e.EventID] = true
	}
	var gap, leftOut bool
	sec.startPos, gap, leftOut = b.gaps(inTimeline)
	sec.delta = gap || leftOut
	sec.timeline, sec.state = b.sections(client[:len(b.picked)], client[len(b.picked):])
	sec.summary = hasMember(b.picked) || b.membersChanged && hasMember(st)
	sec.empty = len(b.picked) == 0 && len(st) == 0 && !b.limited
	n := 64
	for _, e := range client {
		n += len(e) + 1
	}
	enc := append(make([]byte, 0, n), `"state":`...)
	enc = sec.state.appendJSON(enc)
	enc = append(enc, `,"timeline":`...)
	sec.encoded = sec.timeline.appendJSON(enc)
	return sec, nil
}

// sharedKey is the part of the filter a shared section depends on (plan.shareKey): the timeline
// limit and the timeline and state filters.
func (p *plan) sharedKey() string {
	b := strconv.AppendInt(make([]byte, 0, 32), int64(p.limit), 10)
	b = p.timeline.appendKey(b)
	b = p.state.appendKey(b)
	return string(b)
}

// appendKey appends an unambiguous form of the matcher.
func (m *matcher) appendKey(b []byte) []byte {
	for _, list := range [...][]string{m.types, m.notTypes, m.senders, m.notSenders, m.rooms, m.notRooms} {
		if list == nil {
			b = append(b, '-') // no restriction, unlike an empty list
			continue
		}
		b = append(b, '[')
		for _, s := range list {
			b = strconv.AppendInt(b, int64(len(s)), 10)
			b = append(b, ':')
			b = append(b, s...)
		}
		b = append(b, ']')
	}
	switch {
	case m.containsURL == nil:
		return append(b, '-')
	case *m.containsURL:
		return append(b, 't')
	default:
		return append(b, 'f')
	}
}
