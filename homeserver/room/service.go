package room

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/coalesce"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Options configure the room service.
type Options struct {
	ServerName     string
	Key            signing.Key
	DefaultVersion event.Version
	// Resolve is state resolution (package stateres, which imports this one, so the composition
	// root passes it in). Without it, diverging states (forks, which only federation creates)
	// cannot be merged and such events fail.
	Resolve ResolveFunc
}

// Service creates rooms and appends events to them. Every write goes through one writer
// goroutine that batches the jobs waiting at that moment into one transaction (group commit):
//
//	handler ──job──▶ jobs chan ──▶ writer: BEGIN; job1 (savepoint); job2 (savepoint); ... COMMIT
//	                                  │ after commit: update the room cache, publish {room, pos}
//	                                  ▼
//	                           job.done ◀── each job's own result
//
// A job that fails rolls back to its savepoint and leaves the batch's other jobs alone. The
// writer owns the in-memory room states (current state events, forward extremities, depth), so
// building an event costs no database reads once a room is warm.
//
// One node only for now: with several nodes on one PostgreSQL, rooms need a per-room advisory lock
// and cache invalidation over the bus (later issue).
type Service struct {
	store *storage.Store
	bus   *bus.Bus
	opts  Options
	log   *slog.Logger
	// Now is the clock; tests replace it before the first write.
	Now func() time.Time

	jobs  chan *job
	rooms map[string]*roomState // owned by the writer goroutine
	// checkers cache parsed power levels, create and membership events by event ID (facts that
	// never change), one per room version; owned by the writer goroutine.
	checkers map[event.Version]*Checker
	// txns are the transaction IDs of the last txnWindow (txnindex.go); owned by the writer.
	txns txnIndex
	stop chan struct{}
	wg   sync.WaitGroup

	// related shares the relation reads of the /sync responses that carry the same events up
	// to the same stream position (ClientEventsUpTo).
	related *coalesce.Cache[relatedKey, []storage.Event]
	// childReads counts the reads of children (ChildReads).
	childReads atomic.Int64
	// onBatch is told about the writer's transactions (OnBatch).
	onBatch atomic.Pointer[func(Batch)]
	// stateGen counts the serial path's committed transactions, which store every state and
	// member event: what the user directory's cache is kept against (userdirectory.go).
	stateGen  atomic.Int64
	directory directoryCache
	// fresh are the events of the pipelined batches since the serial path last ran (relations.go).
	fresh   freshEvents
	forgets atomic.Int64 // Forgets
	// backfiller fetches history from other servers for /messages (SetBackfiller; backfill.go).
	backfiller *backfiller
	// commitHook, set by tests before the first write, runs at the start of every pipelined
	// batch's transaction; an error fails the batch.
	commitHook func() error
	// stats count the writer's work (WriterStats).
	stats struct{ batches, jobs, busyNS, commitNS atomic.Int64 }
}

// WriterStats counts the writer's work since the service started: the batches it ran, the jobs
// they carried, the time the writer goroutine spent running them (Busy; the rest of the time it
// waited for jobs or for the committer), and the time the committer spent storing pipelined
// batches (Committing; pipeline.go), which overlaps with the writer's.
type WriterStats struct {
	Batches, Jobs    int64
	Busy, Committing time.Duration
}

// WriterStats reads the writer's counters (for metrics).
func (s *Service) WriterStats() WriterStats {
	return WriterStats{Batches: s.stats.batches.Load(), Jobs: s.stats.jobs.Load(), Busy: time.Duration(s.stats.busyNS.Load()),
		Committing: time.Duration(s.stats.commitNS.Load())}
}

type relatedKey struct {
	ids  string
	upTo int64
}

// maxBatch bounds how many jobs one transaction carries.
const maxBatch = 128

type job struct {
	ctx context.Context
	fn  func(t *txn) error
	// deferred jobs only append timeline events: they write nothing until the batch ends, when
	// deferredRows stores all their rows with a statement per table (no savepoint per job).
	deferred bool
	done     chan error
}

// New builds the service and starts its writer; Close stops it.
func New(store *storage.Store, b *bus.Bus, opts Options, log *slog.Logger) *Service {
	s := &Service{store: store, bus: b, opts: opts, log: log, Now: time.Now,
		jobs: make(chan *job, 1024), rooms: make(map[string]*roomState), checkers: make(map[event.Version]*Checker),
		stop: make(chan struct{}), related: coalesce.NewCache[relatedKey, []storage.Event](3*time.Second, 4096)}
	s.wg.Add(1)
	go s.writer()
	return s
}

// Close stops the writer after the jobs already queued.
func (s *Service) Close() {
	close(s.stop)
	s.wg.Wait()
}

// write runs fn in the writer, in a transaction shared with other waiting jobs, and returns its
// error.
func (s *Service) write(ctx context.Context, fn func(t *txn) error) error {
	return s.enqueue(ctx, &job{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// writeDeferred is write for a job whose only writes are timeline (non-state) events through
// txn.append, which it must not follow with reads of what it appended.
func (s *Service) writeDeferred(ctx context.Context, fn func(t *txn) error) error {
	return s.enqueue(ctx, &job{ctx: ctx, fn: fn, deferred: true, done: make(chan error, 1)})
}

func (s *Service) enqueue(ctx context.Context, j *job) error {
	select {
	case s.jobs <- j:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return errors.New("room: service stopped")
	}
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		// The job may still commit; its result is dropped, as with any request the client left.
		return ctx.Err()
	}
}

// notice is what the writer publishes after a commit: a room moved to a new stream position.
type notice struct {
	RoomID string `json:"room_id"`
	Pos    int64  `json:"pos"`
	// NoMembers says the batch the notice comes from stored no m.room.member event at any of its
	// positions, which are those after After: a reader of membership changes (sync's notifier)
	// need not read them. Set for pipelined batches, which hold only plain timeline events.
	After     int64 `json:"after,omitempty"`
	NoMembers bool  `json:"no_members,omitempty"`
}

// runBatch runs jobs in one transaction and returns their results.
func (s *Service) runBatch(batch []*job) []error {
	results := make([]error, len(batch))
	committed := map[string]*roomState{}
	var notices []notice
	var dests []string
	txns := &batchTxns{}
	s.fresh.forget() // the transaction may store relations
	if fn := s.onBatch.Load(); fn != nil {
		(*fn)(Batch{}) // before anything of the transaction is visible
	}
	err := s.store.Write(context.Background(), func(c storage.Conn) error {
		// Positions: lock the events counter once for the whole batch, hand positions out in
		// memory, and store the last one before commit. The lock is held until commit, so no
		// other writer can commit a lower position after us.
		pos, err := c.LockPosition(context.Background(), storage.StreamEvents)
		if err != nil {
			return err
		}
		alloc := &positions{next: pos}
		rows := &deferredRows{}
		for i, j := range batch {
			if err := j.ctx.Err(); err != nil {
				results[i] = err
				continue
			}
			t := &txn{s: s, c: c, ctx: j.ctx, base: committed, rooms: map[string]*roomState{}, pos: alloc, txns: txns}
			if j.deferred {
				// Nothing to roll back on failure: the job wrote nothing yet.
				t.rows = rows
				if err := j.fn(t); err != nil {
					results[i] = err
					rows.drop(t)
					txns.drop()
					continue
				}
				rows.keep(t)
				txns.keep()
				for id, rs := range t.rooms {
					committed[id] = rs
				}
				notices = append(notices, t.notices...)
				dests = append(dests, t.dests...)
				continue
			}
			// This job may read what earlier jobs of the batch appended.
			if err := rows.flush(context.Background(), c); err != nil {
				return err
			}
			if err := c.Savepoint(j.ctx); err != nil {
				return err
			}
			took := alloc.next
			if err := j.fn(t); err != nil {
				results[i] = err
				txns.drop()
				if rerr := c.RollbackToSavepoint(context.Background()); rerr != nil {
					return rerr
				}
				if alloc.next != took { // it stored events, so it may have changed state maps
					if rerr := t.restoreState(); rerr != nil {
						return rerr
					}
				}
				continue
			}
			if err := c.ReleaseSavepoint(j.ctx); err != nil {
				return err
			}
			txns.keep()
			for id, rs := range t.rooms {
				committed[id] = rs
			}
			notices = append(notices, t.notices...)
			dests = append(dests, t.dests...)
		}
		if err := rows.flush(context.Background(), c); err != nil {
			return err
		}
		// Forward extremities change once per room per batch, not once per event.
		for id, rs := range committed {
			if rs.extremitiesDirty {
				if err := c.SetForwardExtremities(context.Background(), id, rs.extremities); err != nil {
					return err
				}
				rs.extremitiesDirty = false
			}
		}
		if alloc.next != pos {
			return c.SetPosition(context.Background(), storage.StreamEvents, alloc.next)
		}
		return nil
	})
	if err != nil {
		// Nothing was committed: the rooms the batch changed leave the cache (their state maps
		// were changed in place), and every job gets the error.
		s.log.Error("room write batch failed", "jobs", len(batch), "err", err)
		for id := range committed {
			delete(s.rooms, id)
		}
		for i := range results {
			if results[i] == nil {
				results[i] = err
			}
		}
	} else {
		for id, rs := range committed {
			s.rooms[id] = rs
		}
		s.stateGen.Add(1)
		s.committedTxns(txns)
		s.publish(notices, 0, false)
		s.publishOutbound(dests)
	}
	return results
}

// positions hands out stream positions within one batch transaction.
type positions struct{ next int64 }

func (p *positions) take() int64 {
	p.next++
	return p.next
}

func (s *Service) publish(ns []notice, after int64, noMembers bool) {
	if s.bus == nil {
		return
	}
	// One notice per room per batch, with its highest position: a reader reads everything up to it.
	latest := make(map[string]int, len(ns))
	out := ns[:0]
	for _, n := range ns {
		if i, ok := latest[n.RoomID]; ok {
			out[i].Pos = max(out[i].Pos, n.Pos)
			continue
		}
		latest[n.RoomID] = len(out)
		out = append(out, n)
	}
	for _, n := range out {
		n.After, n.NoMembers = after, noMembers
		data, _ := json.Marshal(n)
		if err := s.bus.Publish(bus.SubjectRoomEvent(n.RoomID), data); err != nil {
			s.log.Warn("publish room event", "room_id", n.RoomID, "err", err)
		}
	}
}

func (s *Service) nowMS() int64 { return s.Now().UnixMilli() }

// maxCheckerEntries bounds a checker's cache; past it the checker starts afresh.
const maxCheckerEntries = 100000

// checker returns the writer's auth checker for a room version.
func (s *Service) checker(v event.Version) *Checker {
	c := s.checkers[v]
	if c == nil || c.cached() > maxCheckerEntries {
		c = NewChecker(v, nil)
		s.checkers[v] = c
	}
	return c
}

// errRoomNotFound is M_NOT_FOUND for rooms this server does not know.
var errRoomNotFound = spec.ErrNotFound.With("Unknown room")

// roomState is what the writer needs to build and authorise the next event of a room. A job
// works on a copy that shares the state map (share; roomstate.go says how a failed job's changes
// to the map are undone).
type roomState struct {
	roomID      string
	version     event.Version
	state       map[StateKeyTuple]*event.PDU
	extremities []string
	depth       int64
	group       int64 // state group of the current state
	// servers are the other servers with joined members in the current state, sorted: where
	// this server's events go. Replaced, never modified, so clones share it.
	servers []string
	// extremitiesDirty says the extremities changed in this batch and must be written.
	extremitiesDirty bool
}

// share copies rs for a job, except the state map, which the copy shares: copying it would cost as
// much as the room has state entries, for every event of a large room.
func (rs *roomState) share() *roomState {
	c := *rs
	c.extremities = append([]string(nil), rs.extremities...)
	return &c
}

func (rs *roomState) lookup() StateLookup { return StateFromMap(rs.state) }

// txn is one job's view inside the batch transaction.
type txn struct {
	s       *Service
	c       storage.Conn
	ctx     context.Context
	base    map[string]*roomState // committed earlier in this batch
	rooms   map[string]*roomState // this job's working copies
	notices []notice
	// dests are the servers this job queued events for (announced after commit).
	dests []string
	pos   *positions // the batch's stream positions
	// rows collects the events of a deferred job (nil for other jobs, which write at once).
	rows *deferredRows
	// txns are the transaction IDs the batch stored so far (txnindex.go).
	txns *batchTxns
	// pipelined says the job runs outside any transaction (pipeline.go): t.c is the read pool,
	// and what needs the database ends the job with errSerial.
	pipelined bool
	// before records the forward extremities of the cached rooms the job first takes (pipelined
	// jobs: prepared.before; nil in others).
	before map[string][]string
	// recv buffers the events a ReceivePDUs job stores (nil in other jobs).
	recv *received
	// parsed are events this job stored as outliers, by ID, for loadPDUs.
	parsed map[string]*event.PDU
}

// deferredRows are the rows of the deferred jobs of a batch, written by flush with one statement
// per table. A job's rows become part of the batch (keep) or are discarded (drop) when it ends.
type deferredRows struct {
	events []storage.Event
	outbox []storage.OutboxRow
	// kept counts the rows that belong to finished jobs.
	keptEvents, keptOutbox int
}

func (d *deferredRows) add(e storage.Event) { d.events = append(d.events, e) }

func (d *deferredRows) keep(*txn) { d.keptEvents, d.keptOutbox = len(d.events), len(d.outbox) }

func (d *deferredRows) drop(*txn) {
	d.events, d.outbox = d.events[:d.keptEvents], d.outbox[:d.keptOutbox]
}

func (d *deferredRows) flush(ctx context.Context, c storage.Conn) error {
	if len(d.events) == 0 {
		return nil
	}
	if err := c.InsertTimelineEvents(ctx, d.events); err != nil {
		return err
	}
	if err := c.InsertOutbox(ctx, d.outbox); err != nil {
		return err
	}
	*d = deferredRows{}
	return nil
}

// room returns this job's working copy of a room's state, loading it if needed.
func (t *txn) room(roomID string) (*roomState, error) {
	if rs, ok := t.rooms[roomID]; ok {
		return rs, nil
	}
	src, ok := t.base[roomID]
	if !ok {
		src, ok = t.s.rooms[roomID]
		if _, seen := t.before[roomID]; ok && t.before != nil && !seen {
			t.before[roomID] = src.extremities // replaced, never modified in place
		}
	}
	if !ok {
		if t.pipelined {
			return nil, errSerial
		}
		var err error
		if src, err = t.load(roomID); err != nil {
			return nil, err
		}
	}
	rs := src.share()
	t.rooms[roomID] = rs
	return rs, nil
}

// load reads a room's current state from storage.
func (t *txn) load(roomID string) (*roomState, error) {
	r, err := t.c.Room(t.ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errRoomNotFound
	}
	if err != nil {
		return nil, err
	}
	v, err := event.LookupVersion(r.Version)
	if err != nil {
		return nil, err
	}
	rs := &roomState{roomID: roomID, version: v, state: map[StateKeyTuple]*event.PDU{}}
	cur, err := t.c.CurrentState(t.ctx, roomID)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(cur))
	for _, id := range cur {
		ids = append(ids, id)
	}
	evs, err := t.c.Events(t.ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		p, err := event.Parse(v, e.PDU)
		if err != nil {
			return nil, fmt.Errorf("room %s: stored state event %s: %w", roomID, e.EventID, err)
		}
		rs.state[StateKeyTuple{p.Type, *p.StateKey}] = p
	}
	rs.servers = serversOf(rs.state, t.s.opts.ServerName)
	if rs.extremities, err = t.c.ForwardExtremities(t.ctx, roomID); err != nil {
		return nil, err
	}
	exts, err := t.c.Events(t.ctx, rs.extremities)
	if err != nil {
		return nil, err
	}
	for _, e := range exts {
		rs.depth = max(rs.depth, e.Depth)
		rs.group = max(rs.group, e.StateGroup)
	}
	if len(exts) > 1 {
		// Several extremities happen only with federation (later issue); the resolved current
		// state is what current_state holds, and the next event's state group is written whole.
		rs.group = 0
	}
	return rs, nil
}

// DefaultVersion is the room version of new rooms.
func (s *Service) DefaultVersion() event.Version { return s.opts.DefaultVersion }
