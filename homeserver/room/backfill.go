package room

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Backfill (server-server API, "Backfilling and retrieving missing events"): a room's history
// from before this server joined it, both ways.
//
//	serving:   GET /backfill ─▶ BackfillForServer: walk prev_events back from ?v=, deepest first,
//	           history visibility for the asking server (hidden events sent redacted)
//
//	fetching:  /messages (dir=b) reaches the oldest event held ─▶ backfillMore (one run per room)
//	             backfillPlan: the backfill extremities (prev events of timeline events that are
//	             not in the timeline here), the servers to ask
//	             Backfiller.Backfill (federation/backfill.go): /backfill from each server in turn,
//	             signatures and hashes checked, then ─▶ ReceiveBackfill (one writer job):
//	                 4. auth against the auth events   5. auth against the state before
//	                 stored at negative stream positions, before the whole timeline
//	           ◀─ /messages reads on, with the new events
//
// Backfilled events get stream positions below zero, going down with each batch (oldest event of
// a batch lowest): /messages orders by depth, then stream position, so they sort before the events
// they precede; /sync reads positions above its token and never sees them. They change neither the
// current state nor the forward extremities, wake no /sync, queue nothing for other servers. Their
// state (the state group) comes from their prev events, or from the state before them another
// server reports (/state_ids) for the oldest ones. Events held as outliers (a joined room's state
// and auth chain) join the timeline this way when backfill reaches them.

const (
	// maxBackfillServe bounds the events one /backfill answer carries.
	maxBackfillServe = 100
	// backfillLimit is how many events this server asks for at a time.
	backfillLimit = 100
	// maxBackfillFrom bounds the extremities one request starts from (the deepest first).
	maxBackfillFrom = 5
	// maxBackfillServers bounds the servers one round asks.
	maxBackfillServers = 5
	// maxBackfillRounds bounds the /backfill rounds one /messages call waits for.
	maxBackfillRounds = 3
	// backfillTimeout bounds one round, all servers included.
	backfillTimeout = 30 * time.Second
	// An extremity no server had anything for is not asked for again before backfillRetryEmpty;
	// one no server answered for, before backfillRetryFailed.
	backfillRetryEmpty  = time.Hour
	backfillRetryFailed = time.Minute
)

// BackfillForServer is GET /backfill/{roomId}: the events from (those stored) and their ancestors
// through prev_events, breadth-first and deepest first, up to limit (at most maxBackfillServe),
// for a server with a member in the room. Events the server may not see are sent redacted, as
// /get_missing_events does, so that the graph stays connected. Outliers and rejected events are
// not sent.
func (s *Service) BackfillForServer(ctx context.Context, server, roomID string, from []string, limit int) ([]json.RawMessage, error) {
	c := s.store.Read()
	v, err := s.versionForServer(ctx, c, roomID, server)
	if err != nil {
		return nil, err
	}
	limit = min(limit, maxBackfillServe)
	out := []json.RawMessage{}
	if limit <= 0 || len(from) == 0 {
		return out, nil
	}
	found, err := s.walkBack(ctx, c, v, roomID, from, limit)
	if err != nil {
		return nil, err
	}
	sv := newServerView(c, server)
	for _, e := range found {
		raw, err := s.jsonForServer(ctx, c, sv, v, e)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// walkBack is the walk of BackfillForServer: always the deepest event not taken yet among the
// start events and the prev events of those taken.
func (s *Service) walkBack(ctx context.Context, c storage.Conn, v event.Version, roomID string, from []string, limit int) ([]storage.Event, error) {
	known := map[string]storage.Event{} // read ahead
	seen := map[string]bool{}
	var pending []string // to read
	for _, id := range from {
		if !seen[id] {
			seen[id] = true
			pending = append(pending, id)
		}
	}
	var frontier, out []storage.Event
	readAhead := true
	for len(out) < limit {
		if len(pending) > 0 {
			var ask []string
			for _, id := range pending {
				if e, ok := known[id]; ok {
					frontier = append(frontier, e)
				} else {
					ask = append(ask, id)
				}
			}
			pending = pending[:0]
			evs, err := c.Events(ctx, ask)
			if err != nil {
				return nil, err
			}
			for _, e := range evs {
				if e.RoomID == roomID && !e.Rejected && !e.Outlier {
					frontier = append(frontier, e)
				}
			}
			if readAhead && len(frontier) > 0 {
				// The timeline events below the start, with one query: in a room without forks,
				// all the walk needs.
				readAhead = false
				top := slices.MaxFunc(frontier, deeper)
				below, err := c.TimelineEvents(ctx, roomID, storage.TopoPos{Depth: top.Depth, Stream: math.MaxInt64}, true, 2*limit)
				if err != nil {
					return nil, err
				}
				for _, e := range below {
					known[e.EventID] = e
				}
			}
		}
		if len(frontier) == 0 {
			break
		}
		i := 0
		for j := range frontier {
			if deeper(frontier[j], frontier[i]) > 0 {
				i = j
			}
		}
		e := frontier[i]
		frontier = slices.Delete(frontier, i, i+1)
		out = append(out, e)
		p, err := event.Parse(v, e.PDU)
		if err != nil {
			return nil, err
		}
		pending = appendUnseen(pending, seen, p.PrevEvents)
	}
	return out, nil
}

// deeper orders events by depth, then stream position.
func deeper(a, b storage.Event) int {
	if a.Depth != b.Depth {
		return cmp.Compare(a.Depth, b.Depth)
	}
	return cmp.Compare(a.StreamPos, b.StreamPos)
}

// jsonForServer is an event's federation form for a server: signed when it is this server's,
// redacted when the server may not see it.
func (s *Service) jsonForServer(ctx context.Context, c storage.Conn, sv *serverView, v event.Version, e storage.Event) (json.RawMessage, error) {
	ok, err := sv.maySee(ctx, e)
	if err != nil {
		return nil, err
	}
	raw, err := s.FederationJSON(ctx, c, e)
	if err != nil || ok {
		return raw, err
	}
	// Signed first, then redacted: the signatures cover the redacted form and survive it, and
	// the content hash stays the original's (signing the redacted form would hash its empty
	// content, a different event ID).
	p, err := event.Parse(v, raw)
	if err != nil {
		return nil, err
	}
	red, err := p.Redacted()
	if err != nil {
		return nil, err
	}
	return red.Raw, nil
}

// ReceiveBackfill stores events of a room's past fetched from another server, checked already
// (steps 1 to 3 of the checks on receipt: format, signatures, content hash), in one writer job.
// They are processed oldest first: each is checked against its auth events and against the
// state before it (the state after its prev events, resolved if they differ; else StateBefore),
// and stored at a negative stream position; events held as outliers join the timeline. Nothing
// else moves: no current state, no forward extremities, no /sync wake-up, no outbound queue.
// Outcomes are as ReceivePDUs' (no soft failure): ErrMissingAuthEvents, or ErrMissingPrevEvents
// for an event whose prev events are not in the timeline and that has no StateBefore. The backfill
// extremities follow: the events stored leave them, their prev events not in the timeline join.
func (s *Service) ReceiveBackfill(ctx context.Context, roomID string, in []Incoming) ([]Outcome, error) {
	out := make([]Outcome, len(in))
	order := make([]int, len(in))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(in[a].PDU.Depth, in[b].PDU.Depth) })
	err := s.write(ctx, func(t *txn) error {
		rs, err := t.startReceiving(roomID, in)
		if err != nil {
			return err
		}
		next, err := t.c.BackfillPositions(t.ctx, len(in))
		if err != nil {
			return err
		}
		for _, i := range order {
			if out[i], err = t.receivePast(rs, in[i], &next); err != nil {
				return err
			}
		}
		if err := t.flushReceived(); err != nil {
			return err
		}
		return t.moveBackfillExtremities(rs.roomID, in, out)
	})
	return out, err
}

// receivePast is steps 4 and 5 and the storing of one event of the past.
func (t *txn) receivePast(rs *roomState, inc Incoming, next *int64) (Outcome, error) {
	p := inc.PDU
	o := Outcome{EventID: p.EventID}
	a, ok, err := t.admit(rs, p, &o)
	if !ok || err != nil {
		return o, err
	}
	metas, reject := a.metas, a.reject

	// Step 5: against the state before the event. No step 6: the current state says nothing about
	// an event of the past.
	before, base, baseIDs, err := t.pastStateBefore(rs, p, inc.StateBefore, metas)
	if errors.Is(err, ErrMissingPrevEvents) {
		o.Err = err
		return o, nil
	} else if err != nil {
		return o, err
	}
	if reject == nil {
		lookup, err := t.lookupIn(rs, p, before)
		if errors.Is(err, ErrMissingAuthEvents) {
			o.Err = err
			return o, nil
		} else if err != nil {
			return o, err
		}
		reject = t.check(rs, p, lookup, nil)
	}

	// Stored: accepted at the next position of the batch's block, or rejected (no position, the
	// state before it as its state), as ReceivePDUs does.
	var pos int64
	after := before
	if reject == nil {
		pos = *next
		*next++
		if p.StateKey != nil {
			after = maps.Clone(before)
			after[storage.StateKey{Type: p.Type, StateKey: *p.StateKey}] = p.EventID
		}
	}
	group, err := t.group(rs.roomID, base, baseIDs, after)
	if err != nil {
		return o, err
	}
	row := receivedRow(rs.roomID, p, pos, group, reject != nil)
	if a.upgrading {
		if err := t.flushReceived(); err != nil {
			return o, err
		}
		if err := t.c.UpgradeOutlier(t.ctx, row); err != nil {
			return o, err
		}
		t.recv.metas[row.EventID] = storage.EventMeta{EventID: row.EventID, Rejected: row.Rejected, StateGroup: group, Depth: p.Depth}
	} else if err := t.insertReceived(row); err != nil {
		return o, err
	}
	if reject != nil {
		o.Err = reject
		return o, nil
	}
	if p.Type == TypeRedaction {
		if err := t.flushReceived(); err != nil {
			return o, err
		}
		if err := t.applyRedaction(rs, p, p.RedactsID()); err != nil && !errors.Is(err, spec.ErrForbidden) {
			return o, err
		}
	}
	return o, nil
}

// pastStateBefore is the state before an event of the past: empty for the create event; the
// given state; or the state after its prev events (resolved if they differ), which must all be in
// the timeline. base and baseIDs are a stored group close to it (0 for none).
func (t *txn) pastStateBefore(rs *roomState, p *event.PDU, given storage.StateMap, metas map[string]storage.EventMeta) (ids storage.StateMap, base int64, baseIDs storage.StateMap, err error) {
	if given != nil {
		return given, 0, nil, nil
	}
	if len(p.PrevEvents) == 0 {
		return storage.StateMap{}, 0, nil, nil
	}
	var groups []int64
	for _, id := range p.PrevEvents {
		m, ok := metas[id]
		if !ok || m.Outlier {
			return nil, 0, nil, ErrMissingPrevEvents
		}
		if !slices.Contains(groups, m.StateGroup) {
			groups = append(groups, m.StateGroup)
		}
	}
	if err := t.flushReceived(); err != nil {
		return nil, 0, nil, err
	}
	states := make([]storage.StateMap, len(groups))
	for i, g := range groups {
		if states[i], err = t.c.StateGroup(t.ctx, g); err != nil {
			return nil, 0, nil, err
		}
	}
	if ids, err = t.resolve(rs.version, states); err != nil {
		return nil, 0, nil, err
	}
	return ids, groups[0], states[0], nil
}

// moveBackfillExtremities updates the room's backfill extremities after a batch: the events now in
// the timeline leave them, the prev events of the batch's stored events that are not in the
// timeline join them.
func (t *txn) moveBackfillExtremities(roomID string, in []Incoming, out []Outcome) error {
	var ids []string
	prevDepth := map[string]int64{}
	for i, inc := range in {
		ids = append(ids, inc.PDU.EventID)
		var rej *RejectedError
		if out[i].Err != nil && !errors.As(out[i].Err, &rej) {
			continue // not stored
		}
		for _, id := range inc.PDU.PrevEvents {
			prevDepth[id] = max(prevDepth[id], inc.PDU.Depth)
			ids = append(ids, id)
		}
	}
	metas, err := t.c.EventMetas(t.ctx, ids)
	if err != nil {
		return err
	}
	var filled []string
	var add []storage.BackfillExtremity
	for _, id := range ids {
		if m, ok := metas[id]; ok && !m.Outlier {
			if !slices.Contains(filled, id) {
				filled = append(filled, id)
			}
		} else if d, isPrev := prevDepth[id]; isPrev {
			add = append(add, storage.BackfillExtremity{EventID: id, Depth: d})
			delete(prevDepth, id)
		}
	}
	if err := t.c.DeleteBackfillExtremities(t.ctx, roomID, filled); err != nil {
		return err
	}
	return t.c.AddBackfillExtremities(t.ctx, roomID, add)
}

// Backfiller fetches events of a room's past from other servers (federation.API).
type Backfiller interface {
	// Backfill asks servers in turn for /backfill from the events from (at most limit events)
	// and stores what the first that answers with new events sent (ReceiveBackfill). It returns
	// how many events it stored, and an error when no server answered.
	Backfill(ctx context.Context, roomID string, servers, from []string, limit int) (int, error)
}

// SetBackfiller lets /messages fetch history from other servers (the composition root passes
// the federation API, which imports this package).
func (s *Service) SetBackfiller(b Backfiller) {
	s.backfiller = &backfiller{b: b, running: map[string]*backfillRun{}}
}

// backfiller runs one backfill round per room at a time; other readers of the room wait for it.
type backfiller struct {
	b       Backfiller
	mu      sync.Mutex
	running map[string]*backfillRun
}

type backfillRun struct {
	done   chan struct{}
	stored int
}

// backfillMore fetches events older than the oldest this server holds of a room, if it knows where
// to ask from, and reports whether the timeline may have grown (read it again).
func (s *Service) backfillMore(ctx context.Context, roomID string) bool {
	bf := s.backfiller
	if bf == nil {
		return false
	}
	bf.mu.Lock()
	if run, ok := bf.running[roomID]; ok {
		bf.mu.Unlock()
		select {
		case <-run.done:
			return true // whatever it did: look again (and start a round if there is still one to run)
		case <-ctx.Done():
			return false
		}
	}
	run := &backfillRun{done: make(chan struct{})}
	bf.running[roomID] = run
	bf.mu.Unlock()
	defer func() {
		bf.mu.Lock()
		delete(bf.running, roomID)
		bf.mu.Unlock()
		close(run.done)
	}()
	run.stored = s.backfillRound(ctx, roomID)
	return run.stored > 0
}

// backfillRound is one /backfill exchange: from the deepest extremities due, with the servers in
// the room in turn. Extremities nothing came for wait before they are asked for again.
func (s *Service) backfillRound(ctx context.Context, roomID string) int {
	ctx, cancel := context.WithTimeout(ctx, backfillTimeout)
	defer cancel()
	log := s.log.With("room_id", roomID)
	from, servers, err := s.backfillPlan(ctx, roomID)
	if err != nil {
		log.Warn("backfill: planning failed", "err", err)
		return 0
	}
	if len(from) == 0 {
		return 0
	}
	var n int
	if len(servers) > 0 {
		n, err = s.backfiller.b.Backfill(ctx, roomID, servers, from, backfillLimit)
	} else {
		err = errors.New("no other server is in the room")
	}
	if n > 0 {
		return n
	}
	wait := backfillRetryEmpty
	if err != nil {
		wait = backfillRetryFailed
		log.Info("backfill: no server answered", "from", from, "err", err)
	}
	until := s.Now().Add(wait).UnixMilli()
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()
	if err := s.write(wctx, func(t *txn) error { return t.c.DeferBackfillExtremities(t.ctx, roomID, from, until) }); err != nil {
		log.Warn("backfill: recording the extremities failed", "err", err)
	}
	return 0
}

// backfillPlan picks the extremities to backfill from (due, the deepest first) and the servers
// to ask (those in the room now, the ones with members at the oldest event held first). The first
// time, the extremities are the prev events of the oldest timeline event (a room joined over
// federation starts at the join).
func (s *Service) backfillPlan(ctx context.Context, roomID string) (from, servers []string, err error) {
	c := s.store.Read()
	v, err := s.versionOf(ctx, c, roomID)
	if err != nil {
		return nil, nil, err
	}
	recorded, err := c.BackfillExtremities(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	oldest, err := c.TimelineEvents(ctx, roomID, storage.MinTopo, false, 1)
	if err != nil {
		return nil, nil, err
	}
	var boot []storage.BackfillExtremity
	if len(oldest) == 1 {
		p, err := event.Parse(v, oldest[0].PDU)
		if err != nil {
			return nil, nil, err
		}
		for _, id := range p.PrevEvents {
			if !slices.ContainsFunc(recorded, func(e storage.BackfillExtremity) bool { return e.EventID == id }) {
				boot = append(boot, storage.BackfillExtremity{EventID: id, Depth: p.Depth})
			}
		}
	}
	all := append(slices.Clone(recorded), boot...)
	ids := make([]string, len(all))
	for i, e := range all {
		ids[i] = e.EventID
	}
	metas, err := c.EventMetas(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	var stale []string
	var add, due []storage.BackfillExtremity
	now := s.nowMS()
	for i, e := range all {
		if m, ok := metas[e.EventID]; ok && !m.Outlier {
			if i < len(recorded) {
				stale = append(stale, e.EventID) // in the timeline now (another way)
			}
			continue
		}
		if i >= len(recorded) {
			add = append(add, e)
		}
		if e.NextTry <= now {
			due = append(due, e)
		}
	}
	if len(stale) > 0 || len(add) > 0 {
		if err := s.write(ctx, func(t *txn) error {
			if err := t.c.DeleteBackfillExtremities(t.ctx, roomID, stale); err != nil {
				return err
			}
			return t.c.AddBackfillExtremities(t.ctx, roomID, add)
		}); err != nil {
			return nil, nil, err
		}
	}
	slices.SortStableFunc(due, func(a, b storage.BackfillExtremity) int { return cmp.Compare(b.Depth, a.Depth) })
	for _, e := range due[:min(len(due), maxBackfillFrom)] {
		from = append(from, e.EventID)
	}
	if len(from) == 0 {
		return nil, nil, nil
	}

	inRoom, err := s.ServersInRoom(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	inRoom = slices.DeleteFunc(inRoom, func(srv string) bool { return srv == s.opts.ServerName })
	then := map[string]bool{}
	if len(oldest) == 1 && oldest[0].StateGroup != 0 {
		st, err := c.StateGroup(ctx, oldest[0].StateGroup)
		if err != nil {
			return nil, nil, err
		}
		for k := range st {
			if k.Type == TypeMember {
				then[serverOf(k.StateKey)] = true
			}
		}
	}
	slices.SortStableFunc(inRoom, func(a, b string) int {
		switch {
		case then[a] == then[b]:
			return 0
		case then[a]:
			return -1
		}
		return 1
	})
	return from, inRoom[:min(len(inRoom), maxBackfillServers)], nil
}

// pastView extends a viewer to backfilled events (negative stream positions). Their place in the
// stream is not the time of the user's memberships and of the history visibility changes before
// them (those may not be backfilled yet): the state stored with the event decides instead, by the
// same rules. The state after the event stands for the state at it.
type pastView struct {
	v       *viewer
	c       storage.Conn
	byGroup map[int64]bool
}

func newPastView(c storage.Conn, v *viewer) *pastView {
	return &pastView{v: v, c: c, byGroup: map[int64]bool{}}
}

// canSee reports whether the user may see the event.
func (pv *pastView) canSee(ctx context.Context, e *storage.Event) (bool, error) {
	if e.StreamPos >= 0 || e.StateGroup == 0 {
		return pv.v.canSee(e), nil
	}
	if ok, done := pv.byGroup[e.StateGroup]; done {
		return ok, nil
	}
	state, err := pv.c.StateGroup(ctx, e.StateGroup)
	if err != nil {
		return false, err
	}
	hvID := state[storage.StateKey{Type: "m.room.history_visibility"}]
	memberID := state[storage.StateKey{Type: TypeMember, StateKey: pv.v.userID}]
	evs, err := pv.c.Events(ctx, slices.DeleteFunc([]string{hvID, memberID}, func(id string) bool { return id == "" }))
	if err != nil {
		return false, err
	}
	visibility, membership := VisibilityShared, ""
	for _, ev := range evs {
		switch ev.EventID {
		case hvID:
			visibility = normaliseVisibility(historyVisibility(ev.ClientJSON))
		case memberID:
			membership = ev.Membership
		}
	}
	ok := visibility == VisibilityWorldReadable || membership == MembershipJoin ||
		visibility == VisibilityShared && pv.v.joinedAfter(e.StreamPos) ||
		visibility == VisibilityInvited && membership == MembershipInvite
	pv.byGroup[e.StateGroup] = ok
	return ok, nil
}
