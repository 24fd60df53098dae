package sync

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Assembly of one response. The reads, whatever the number of rooms:
//
//	counters (3), the user's memberships (1), account data since the token (1),
//	new events of every room continuing from the token (1, rarely a few more),
//	state events and invite state (1-2), client-event extras (redactions, relations: 1-3),
//	receipts since the token (0-2: only when the receipts stream moved, or a room is new),
//	users sharing a room (0-1: only when presence changed), unread counts of the rooms sent (0-1).
//
// Typing comes from memory.
//
// Rooms that need more read more: a room whose timeline starts fresh (initial sync, newly
// joined, left) reads its last events and its state at the timeline start; a room whose timeline
// skips events (limited, filtered) reads the states it needs to compute the state delta; a room
// with events the user may not see by history visibility reads the user's membership history.

const (
	// maxBulkEvents bounds one read of new events for all rooms together.
	maxBulkEvents = 1000
	// maxBulkRounds bounds the reads of new events for all rooms together before rooms that still
	// need events read their own.
	maxBulkRounds = 4
	// maxScan bounds the events one room's timeline reads while skipping hidden or filtered ones.
	maxScan = 1000
)

// roomJob is one room of rooms.join or rooms.leave while it is assembled.
type roomJob struct {
	m        storage.Membership // the user's current membership
	leave    bool               // rooms.leave (else rooms.join)
	from, to int64              // the timeline is drawn from (from, to]
	full     bool               // send the full state at the timeline start, not a delta

	raw     []storage.Event // events read for the timeline, newest first
	scanned int64           // raw holds every event of (scanned, to]
	picked  []storage.Event // the timeline, oldest first
	limited bool
	vis     *room.Visibility // loaded when an event needs it

	membersChanged bool         // the state section holds membership changes (not only lazy-loaded members)
	sec            *roomSection // the timeline and state, shared with other users (share.go)

	state       []string // state event IDs to send
	accountData []json.RawMessage
	ephemeral   []json.RawMessage
}

// build assembles one response from since (nil: initial sync) up to the current positions.
func (s *Service) build(ctx context.Context, req Request, since *Token) (*Response, error) {
	s.builds.Add(1)
	c := s.store.Read()
	p := s.plans.of(req.Filter)
	// Counters first: every position at or below them has committed. The memberships and account
	// data read afterwards may be newer; a position we see has committed along with all below it,
	// so the token moves up to it and stays exact.
	pos, err := s.positions.Read(ctx)
	if err != nil {
		return nil, err
	}
	evPos, adPos, rcPos := pos[storage.StreamEvents], pos[storage.StreamAccountData], pos[storage.StreamReceipts]
	ms, err := s.memberships(ctx, c, req.UserID, evPos, since == nil)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		evPos = max(evPos, m.StreamPos)
	}
	var from Token
	if since != nil {
		from = *since
	}
	var ads []storage.AccountData
	if adPos > from.AccountData {
		// Nothing to read otherwise: data stored after the counters were read is announced to
		// the notifier after Listen, and wakes this sync again.
		if ads, err = c.AccountDataSince(ctx, req.Localpart, from.AccountData); err != nil {
			return nil, err
		}
	}
	for _, a := range ads {
		adPos = max(adPos, a.StreamPos)
	}
	to := Token{Events: evPos, AccountData: adPos, Receipts: rcPos,
		ToDevice: pos[storage.StreamToDevice], DeviceLists: pos[storage.StreamDeviceLists]}
	if since != nil && since.after(to) {
		return nil, spec.ErrInvalidParam.With("The since token is ahead of this server")
	}
	if s.eph.Typing != nil {
		to.Typing = s.eph.Typing.Position(from.Typing)
	}
	if s.eph.Presence != nil {
		to.Presence = s.eph.Presence.Position(from.Presence)
	}
	resp := &Response{AccountData: EventList{Events: []json.RawMessage{}}, Presence: EventList{Events: []json.RawMessage{}},
		Rooms: Rooms{Join: map[string]*JoinedRoom{}}}

	var jobs []*roomJob
	var invites []storage.Membership
	for _, m := range ms {
		if !p.rooms.room(m.RoomID) {
			continue
		}
		changed := since == nil || m.StreamPos > from.Events
		switch m.Membership {
		case room.MembershipJoin:
			j := &roomJob{m: m, from: from.Events, to: evPos, full: req.FullState}
			if changed {
				// Newly joined (or initial): the last events whatever the token, and the full state.
				j.from, j.full = 0, true
			}
			jobs = append(jobs, j)
		case room.MembershipInvite, room.MembershipKnock:
			if changed {
				invites = append(invites, m)
			}
		case room.MembershipLeave, room.MembershipBan:
			if since == nil && !p.includeLeave || since != nil && !changed {
				continue
			}
			jobs = append(jobs, &roomJob{m: m, leave: true, from: from.Events, to: m.StreamPos, full: since == nil || req.FullState})
		}
	}

	if err := s.readTimelines(ctx, c, req, p, jobs, from.Events, evPos); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if err := s.stateOf(ctx, c, req, p, j, from.Events); err != nil {
			return nil, err
		}
	}
	byRoom := make(map[string]*roomJob, len(jobs))
	for _, j := range jobs {
		byRoom[j.m.RoomID] = j
	}
	for _, a := range ads {
		ev, _ := json.Marshal(map[string]any{"type": a.Type, "content": a.Content})
		if a.RoomID == "" {
			if p.accountData.typ(a.Type) {
				resp.AccountData.Events = append(resp.AccountData.Events, ev)
			}
		} else if j := byRoom[a.RoomID]; j != nil && p.roomData.room(a.RoomID) && p.roomData.typ(a.Type) {
			j.accountData = append(j.accountData, ev)
		}
	}
	// The opt-in first: fillRooms keeps the events a delivery receipt is for only if one may be
	// written.
	resp.adPos = to.AccountData
	resp.optIn = s.optIns.known(req.Localpart, from.AccountData, to.AccountData, ads)
	if to.Receipts, err = s.ephemeral(ctx, c, req, p, jobs, from, to); err != nil {
		return nil, err
	}
	if err := s.fillPresence(ctx, req, p, from, to, ms, resp); err != nil {
		return nil, err
	}
	if err := s.fillRooms(ctx, c, req, p, jobs, evPos, resp); err != nil {
		return nil, err
	}
	if err := s.fillUnread(ctx, c, req, p, jobs, rcPos, resp); err != nil {
		return nil, err
	}
	if err := s.fillInvites(ctx, c, invites, resp); err != nil {
		return nil, err
	}
	if err := s.fillToDevice(ctx, req, since, from, to.ToDevice, resp, &to); err != nil {
		return nil, err
	}
	if err := s.fillKeys(ctx, req, since, from, to, jobs, resp); err != nil {
		return nil, err
	}
	resp.NextBatch = s.tokenText(to)
	return resp, nil
}

// memberships are the user's remembered rooms, from the membership cache when it is current at
// evPos (the events counter just read), else from storage.
func (s *Service) memberships(ctx context.Context, c storage.Conn, userID string, evPos int64, initial bool) ([]storage.Membership, error) {
	mc := s.notifier.members
	forgets := s.rooms.Forgets()
	if !initial {
		if ms, ok := mc.get(ctx, userID, evPos, forgets); ok {
			return ms, nil
		}
	}
	ms, err := c.RememberedRoomsOfUser(ctx, userID, room.MembershipJoin, room.MembershipInvite, room.MembershipKnock,
		room.MembershipLeave, room.MembershipBan)
	if err != nil {
		return nil, err
	}
	mc.put(userID, memberEntry{ms: ms, at: evPos, forgets: forgets})
	return ms, nil
}

// readTimelines picks each room's timeline: the newest p.limit visible events matching the filter
// in (from, to], and whether more were left out. Rooms continuing from the token share reads of
// the new events of all of them; the others (and any that need more) read their own.
func (s *Service) readTimelines(ctx context.Context, c storage.Conn, req Request, p *plan, jobs []*roomJob, since, upper int64) error {
	byRoom := map[string]*roomJob{}
	var pending []*roomJob
	for _, j := range jobs {
		j.scanned = j.to
		if s.peekSection(req, p, j, since) {
			continue
		}
		if j.from == since && since > 0 && j.from < j.to {
			byRoom[j.m.RoomID] = j
			pending = append(pending, j)
		}
	}
	for round := 0; len(pending) > 0 && round < maxBulkRounds; round++ {
		ids := make([]string, len(pending))
		for i, j := range pending {
			ids[i] = j.m.RoomID
		}
		evs, err := s.readRoomEvents(ctx, c, ids, since, upper, maxBulkEvents)
		if err != nil {
			return err
		}
		floor := since
		if len(evs) == maxBulkEvents {
			floor = evs[len(evs)-1].StreamPos - 1
		}
		for _, e := range evs {
			if j := byRoom[e.RoomID]; j != nil && e.StreamPos <= j.to && e.StreamPos > j.from {
				j.raw = append(j.raw, e)
			}
		}
		next := pending[:0]
		for _, j := range pending {
			j.scanned = min(max(floor, j.from), j.scanned)
			if j.scanned > j.from && len(j.raw) <= p.limit {
				next = append(next, j)
			}
		}
		pending, upper = next, floor
	}
	for _, j := range jobs {
		if j.sec != nil { // peeked
			continue
		}
		if s.shareable(j, since) {
			sec, err := s.section(ctx, c, req, p, j, since)
			if err != nil {
				return err
			}
			if sec != nil {
				j.sec, j.picked, j.limited, j.membersChanged = sec, sec.picked, sec.limited, sec.membersChanged
				continue
			}
		}
		if err := s.pick(ctx, c, req, p, j); err != nil {
			return err
		}
	}
	return nil
}

// pick selects one room's timeline from its raw events, reading more of the room when needed.
func (s *Service) pick(ctx context.Context, c storage.Conn, req Request, p *plan, j *roomJob) error {
	i := 0
	for {
		for ; i < len(j.raw) && len(j.picked) <= p.limit; i++ {
			e := &j.raw[i]
			ok, err := s.visible(ctx, req, j, e)
			if err != nil {
				return err
			}
			if ok && p.timeline.event(e) {
				j.picked = append(j.picked, *e)
			}
		}
		if len(j.picked) > p.limit || j.scanned <= j.from {
			break
		}
		if len(j.raw) >= maxScan {
			j.limited = true // more may be hidden below; the client can paginate from prev_batch
			break
		}
		batch := max(p.limit+1, 50)
		more, err := s.readRoomEvents(ctx, c, []string{j.m.RoomID}, j.from, j.scanned, batch)
		if err != nil {
			return err
		}
		j.raw = append(j.raw, more...)
		if len(more) < batch {
			j.scanned = j.from
		} else {
			j.scanned = more[len(more)-1].StreamPos - 1
		}
	}
	if len(j.picked) > p.limit {
		j.limited = true
		j.picked = j.picked[:p.limit]
	}
	slices.Reverse(j.picked)
	return nil
}

// visible applies history visibility. Events after the user's latest membership event, when that
// is a join, are visible without reading anything.
func (s *Service) visible(ctx context.Context, req Request, j *roomJob, e *storage.Event) (bool, error) {
	if j.m.Membership == room.MembershipJoin && e.StreamPos > j.m.StreamPos {
		return true, nil
	}
	if j.vis == nil {
		v, err := s.rooms.LoadVisibility(ctx, req.UserID, j.m.RoomID)
		if err != nil {
			return false, err
		}
		j.vis = &v
	}
	return j.vis.CanSee(e), nil
}

// stateOf computes the state section of a room: the state at the start of the timeline that the
// client does not have. For a delta it is, by event ID, what the states at the timeline start and
// (when the timeline leaves state events out) at its end hold and the state at since did not,
// without events of the timeline itself.
func (s *Service) stateOf(ctx context.Context, c storage.Conn, req Request, p *plan, j *roomJob, since int64) error {
	if j.sec != nil {
		return nil // the shared section has it (share.go)
	}
	inTimeline := make(map[string]bool, len(j.picked))
	for _, e := range j.picked {
		inTimeline[e.EventID] = true
	}
	startPos, gap, leftOut := j.gaps(inTimeline)
	if !j.full && !gap && !leftOut && (!p.lazyMembers || s.lazyDone(req, j, since, startPos)) {
		// The timeline is everything since the token: the client has the state before it (and,
		// lazy-loading, the member events of the senders).
		return nil
	}
	prev := storage.StateMap{}
	var err error
	if !j.full {
		if prev, err = s.stateAt(ctx, c, j.m.RoomID, since); err != nil {
			return err
		}
	}
	start := prev
	if j.full || gap {
		if start, err = s.stateAt(ctx, c, j.m.RoomID, startPos); err != nil {
			return err
		}
	}
	out := storage.StateMap{}
	for k, id := range start {
		if prev[k] != id && !inTimeline[id] {
			out[k] = id
		}
	}
	if leftOut {
		end, err := s.stateAt(ctx, c, j.m.RoomID, j.to)
		if err != nil {
			return err
		}
		for k, id := range end {
			if prev[k] != id && !inTimeline[id] && start[k] != id {
				out[k] = id
			}
		}
	}
	for k := range out {
		if k.Type == room.TypeMember {
			j.membersChanged = true
			break
		}
	}
	if p.lazyMembers {
		// Members: those of the timeline's senders and, with the full state, the user's own. In a
		// delta every membership change of the gap stays (the spec requires them).
		keep := map[string]bool{}
		for _, e := range j.picked {
			keep[e.Sender] = true
		}
		if j.full {
			keep[req.UserID] = true
			for k := range out {
				if k.Type == room.TypeMember && !keep[k.StateKey] {
					delete(out, k)
				}
			}
		}
		for u := range keep {
			k := storage.StateKey{Type: room.TypeMember, StateKey: u}
			if id, ok := start[k]; ok && !inTimeline[id] {
				out[k] = id
			}
		}
		members := map[string]string{}
		for k, id := range out {
			if k.Type == room.TypeMember {
				members[k.StateKey] = id
			}
		}
		s.lazySent(req, p, j, members, startPos)
	}
	for _, id := range out {
		j.state = append(j.state, id)
	}
	return nil
}

// gaps reports where the picked timeline starts (startPos: the position before its first event,
// j.to when empty), whether events of (from, startPos] exist that it does not show (gap), and
// whether state events after its start are left out of it (leftOut). inTimeline holds the IDs of
// the picked events.
func (j *roomJob) gaps(inTimeline map[string]bool) (startPos int64, gap, leftOut bool) {
	startPos = j.to
	if len(j.picked) > 0 {
		startPos = j.picked[0].StreamPos - 1
	}
	gap = j.scanned > j.from
	for _, e := range j.raw {
		if e.StreamPos <= startPos {
			gap = true
		} else if e.StateKey != nil && !inTimeline[e.EventID] {
			leftOut = true
		}
	}
	return startPos, gap, leftOut
}

// stateAt is StateAt shared with the other syncs reading the same room at the same position (a
// committed one: the answer is fixed). The map is shared: read it, never modify it.
func (s *Service) stateAt(ctx context.Context, c storage.Conn, roomID string, pos int64) (storage.StateMap, error) {
	return s.states.Get(ctx, stateKey{roomID, pos}, func(ctx context.Context) (storage.StateMap, error) {
		return c.StateAt(ctx, roomID, pos)
	})
}

// fillRooms turns the jobs into rooms.join and rooms.leave, with one read of the state events and
// one conversion to client events for all rooms.
// upTo is a position every event at or below which has committed (relation reads are shared by
// it).
func (s *Service) fillRooms(ctx context.Context, c storage.Conn, req Request, p *plan, jobs []*roomJob, upTo int64, resp *Response) error {
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.state...)
	}
	stateEvs, err := c.Events(ctx, ids)
	if err != nil {
		return err
	}
	stateByRoom := map[string][]storage.Event{}
	for _, e := range stateEvs {
		if p.state.event(&e) {
			stateByRoom[e.RoomID] = append(stateByRoom[e.RoomID], e)
		}
	}
	// One list in, one list out: timelines then states, room after room.
	var all []storage.Event
	var keep []*roomJob
	for _, j := range jobs {
		if j.sec != nil {
			// Built and converted once for everyone (share.go); a shared section is never full.
			if !j.sec.empty || len(j.accountData) > 0 || len(j.ephemeral) > 0 {
				keep = append(keep, j)
			}
			continue
		}
		st := stateByRoom[j.m.RoomID]
		slices.SortFunc(st, func(a, b storage.Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
		stateByRoom[j.m.RoomID] = st
		if !j.leave && !j.full && len(j.picked) == 0 && len(st) == 0 && len(j.accountData) == 0 && len(j.ephemeral) == 0 && !j.limited {
			continue // nothing new in this room
		}
		keep = append(keep, j)
		all = append(all, j.picked...)
		all = append(all, st...)
	}
	client, err := s.rooms.ClientEventsUpTo(ctx, room.Reader{UserID: req.UserID, DeviceID: req.DeviceID}, all, upTo)
	if err != nil {
		return err
	}
	var summaries []string
	for _, j := range keep {
		var tl Timeline
		var state EventList
		var shared []byte
		summary := false
		if sec := j.sec; sec != nil {
			tl, state, shared, summary = sec.timeline, sec.state, sec.encoded, sec.summary
		} else {
			st := stateByRoom[j.m.RoomID]
			tl, state = j.sections(client[:len(j.picked)], client[len(j.picked):len(j.picked)+len(st)])
			client = client[len(j.picked)+len(st):]
			summary = j.full || hasMember(j.picked) || j.membersChanged && hasMember(st)
		}
		data := EventList{Events: nonNil(j.accountData)}
		if j.leave {
			if resp.Rooms.Leave == nil {
				resp.Rooms.Leave = map[string]*LeftRoom{}
			}
			resp.Rooms.Leave[j.m.RoomID] = &LeftRoom{State: state, Timeline: tl, AccountData: data}
			continue
		}
		jr := resp.newJoined()
		*jr = JoinedRoom{State: state, Timeline: tl, AccountData: data, Ephemeral: EventList{Events: nonNil(j.ephemeral)}, shared: shared}
		resp.Rooms.Join[j.m.RoomID] = jr
		for i := len(j.picked) - 1; i >= 0 && s.eph.Receipts != nil && resp.optIn != optOff; i-- {
			if j.picked[i].Sender != req.UserID {
				resp.delivered = append(resp.delivered, j.picked[i])
				break
			}
		}
		if summary {
			summaries = append(summaries, j.m.RoomID)
		}
	}
	return s.fillSummaries(ctx, c, req.UserID, summaries, resp)
}

// sections are the timeline and state sections of a room from the client forms of its picked
// timeline events and of its state events.
func (j *roomJob) sections(timeline, state []json.RawMessage) (Timeline, EventList) {
	tl := Timeline{Events: nonNil(timeline), Limited: j.limited}
	if len(j.picked) > 0 {
		tl.PrevBatch = room.PrevBatch(j.picked[0])
	} else {
		tl.PrevBatch = "s" + strconv.FormatInt(j.to, 10)
	}
	return tl, EventList{Events: nonNil(state)}
}

func hasMember(evs []storage.Event) bool {
	for _, e := range evs {
		if e.Type == room.TypeMember {
			return true
		}
	}
	return false
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// maxHeroes is how many members m.heroes names.
const maxHeroes = 5

// fillSummaries sets the summary of the joined rooms whose membership may have changed, with one
// read of their members.
func (s *Service) fillSummaries(ctx context.Context, c storage.Conn, userID string, roomIDs []string, resp *Response) error {
	if len(roomIDs) == 0 {
		return nil
	}
	ms, err := c.MembersOfRooms(ctx, roomIDs, room.MembershipJoin, room.MembershipInvite, room.MembershipLeave, room.MembershipBan)
	if err != nil {
		return err
	}
	sums := make(map[string]*Summary, len(roomIDs))
	gone := map[string][]string{} // left and banned members, heroes of last resort
	for _, id := range roomIDs {
		sums[id] = &Summary{}
	}
	for _, m := range ms {
		sum := sums[m.RoomID]
		switch m.Membership {
		case room.MembershipJoin:
			sum.Joined++
		case room.MembershipInvite:
			sum.Invited++
		}
		if m.UserID == userID {
			continue
		}
		if m.Membership == room.MembershipJoin || m.Membership == room.MembershipInvite {
			if len(sum.Heroes) < maxHeroes {
				sum.Heroes = append(sum.Heroes, m.UserID)
			}
		} else if len(gone[m.RoomID]) < maxHeroes {
			gone[m.RoomID] = append(gone[m.RoomID], m.UserID)
		}
	}
	for id, sum := range sums {
		if len(sum.Heroes) == 0 {
			sum.Heroes = gone[id]
		}
		resp.Rooms.Join[id].Summary = sum
	}
	return nil
}

// strippedTypes are the state events an invited or knocking user sees (the spec's recommended
// stripped state), besides their own membership event.
var strippedTypes = []string{room.TypeCreate, room.TypeJoinRules, "m.room.name", "m.room.avatar", "m.room.topic",
	"m.room.canonical_alias", "m.room.encryption"}

// fillInvites sets rooms.invite and rooms.knock: stripped state of each room, with two reads for
// all of them.
func (s *Service) fillInvites(ctx context.Context, c storage.Conn, ms []storage.Membership, resp *Response) error {
	if len(ms) == 0 {
		return nil
	}
	roomIDs := make([]string, len(ms))
	own := make([]string, len(ms))
	for i, m := range ms {
		roomIDs[i], own[i] = m.RoomID, m.EventID
	}
	evs, err := c.CurrentStateEvents(ctx, roomIDs, strippedTypes)
	if err != nil {
		return err
	}
	mine, err := c.Events(ctx, own)
	if err != nil {
		return err
	}
	byRoom := map[string][]json.RawMessage{}
	slices.SortFunc(evs, func(a, b storage.Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	for _, e := range append(evs, mine...) {
		byRoom[e.RoomID] = append(byRoom[e.RoomID], stripped(e))
	}
	for _, m := range ms {
		list := EventList{Events: nonNil(byRoom[m.RoomID])}
		if m.Membership == room.MembershipKnock {
			if resp.Rooms.Knock == nil {
				resp.Rooms.Knock = map[string]*KnockedRoom{}
			}
			resp.Rooms.Knock[m.RoomID] = &KnockedRoom{KnockState: list}
		} else {
			if resp.Rooms.Invite == nil {
				resp.Rooms.Invite = map[string]*InvitedRoom{}
			}
			resp.Rooms.Invite[m.RoomID] = &InvitedRoom{InviteState: list}
		}
	}
	return nil
}

// stripped is the StrippedStateEvent form of a state event: type, state_key, sender, content.
func stripped(e storage.Event) json.RawMessage {
	var ev struct {
		Content  json.RawMessage `json:"content"`
		Sender   string          `json:"sender"`
		StateKey string          `json:"state_key"`
		Type     string          `json:"type"`
	}
	_ = json.Unmarshal(e.ClientJSON, &ev)
	if ev.Content == nil {
		ev.Content = json.RawMessage("{}")
	}
	out, _ := json.Marshal(ev)
	return out
}
