package room

import (
	"context"
	"errors"
	"runtime"
	"time"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The writer pipelines batches made only of deferred jobs (plain timeline sends, the bulk of a
// busy server). Such a job needs no database transaction to run: it reads the room's cached state
// and appends rows to the batch. So while one batch is being stored and committed on another
// goroutine (the committer), the writer goroutine runs the jobs that arrive (building, hashing and
// authorising their events) into the next batch, which it hands over the moment the committer is
// free:
//
//	writer:     run jobs of N ─┬─ run jobs of N+1 as they come ─┬─ run jobs of N+2 ...
//	committer:                 └─ store + commit N ─────────────┴─ store + commit N+1 ...
//
// So the building of events overlaps with the commit, and a batch holds every job that arrived
// during the previous commit (the fixed cost of a transaction is shared by more events).
//
// At most one batch is in flight. When a batch is handed over its effects on the cached room
// states become the cache's, so the next batch builds on them; positions are provisional (1, 2,
// ...) until the committer locks the stream counter and adds its value. If the batch in flight
// fails, its rooms leave the cache and the jobs of the batch prepared on it run again on the
// serial path, which reloads rooms from the database. A job that would need the database (a room
// not in the cache, a state group to create) stops with errSerial before changing anything, and
// runs on the serial path after its batch. Transaction IDs are looked up in memory (txnindex.go):
// in the open batch, in the batch in flight, and among those committed; a batch's become the
// committed ones when it settles.

// errSerial stops a job of a pipelined batch that needs the serial path.
var errSerial = errors.New("room: job needs the serial writer")

// prepared is a batch of deferred jobs that ran outside any transaction, ready to be stored.
type prepared struct {
	jobs    []*job
	results []error
	serial  []bool // jobs that stopped with errSerial: answered by the serial path
	rows    *deferredRows
	notices []notice
	dests   []string
	alloc   *positions // provisional positions, from 1
	// committed are the rooms the batch's jobs moved, as they left them.
	committed map[string]*roomState
	// before are the forward extremities of those rooms before the batch (as stored once the
	// batch before it is), for a one-statement update of a room that has one before and after.
	before map[string][]string
	// Set when the batch is handed over (seal):
	// last is the last provisional position the batch took (positions 1..last).
	last int64
	// base is the stream position the batch's positions follow (set by the committer).
	base int64
	// exts are the new forward extremities of the rooms the batch moved.
	exts map[string][]string
	// rooms are the rooms whose cached state the batch changed.
	rooms []string
	// txns are the transaction IDs the batch stores, also looked up by the next batch (which
	// may run before this one is committed).
	txns *batchTxns
}

// inflight is the batch being stored by the committer; done receives the outcome.
type inflight struct {
	p    *prepared
	done chan error
}

// pipeline is the writer goroutine's state.
type pipeline struct {
	s      *Service
	flight *inflight // being committed
	open   *prepared // being prepared; handed over when flight ends
	// commits hands batches to the committer goroutine, which lives as long as the writer: a
	// goroutine per batch grew its stack again for SQLite's deep calls each time (~3 % of the
	// server's CPU in the send load test went to stack copies).
	commits chan *inflight
}

func (s *Service) writer() {
	defer s.wg.Done()
	w := &pipeline{s: s, commits: make(chan *inflight)}
	go func() {
		for f := range w.commits {
			f.done <- s.commitPrepared(f.p)
		}
	}()
	defer close(w.commits)
	for {
		if w.open != nil && w.flight == nil {
			w.launch()
		}
		jobs := s.jobs
		if w.open != nil && len(w.open.jobs) >= maxBatch {
			jobs = nil // full: wait for the committer
		}
		var done chan error // nil (never ready) when no batch is in flight
		if w.flight != nil {
			done = w.flight.done
		}
		select {
		case first := <-jobs:
			limit := maxBatch
			if w.open != nil {
				limit -= len(w.open.jobs)
			}
			w.take(s.collect(first, limit))
		case err := <-done:
			w.settle(err)
		case <-s.stop:
			w.finish()
			return
		}
	}
}

// collect returns first and the jobs queued after it, up to limit.
func (s *Service) collect(first *job, limit int) []*job {
	batch := []*job{first}
	if len(s.jobs) == 0 {
		// Let the handlers that are running reach their enqueue before the batch starts: one
		// yield, so no waiting when nothing else runs, and with 20 busy senders twice as
		// many jobs per transaction, each of which has a fixed cost (docs/performance.md).
		runtime.Gosched()
	}
	for len(batch) < limit {
		select {
		case j := <-s.jobs:
			batch = append(batch, j)
		default:
			return batch
		}
	}
	return batch
}

// take runs jobs: deferred ones into the open batch, others on the serial path once nothing is
// pipelined any more.
func (w *pipeline) take(batch []*job) {
	s := w.s
	s.stats.jobs.Add(int64(len(batch)))
	if err := s.loadTxns(); err != nil { // at the first job (tests set s.Now before it)
		s.log.Error("room writer: reading the recent transaction IDs", "err", err)
		for _, j := range batch {
			j.done <- err
		}
		return
	}
	if !pipelinable(batch) {
		w.finish()
		s.stats.batches.Add(1)
		s.runSerial(batch)
		return
	}
	if w.open == nil {
		w.open = &prepared{rows: &deferredRows{}, txns: &batchTxns{}, alloc: &positions{}, committed: map[string]*roomState{},
			before: map[string][]string{}}
		if w.flight != nil {
			w.open.txns.inflight = w.flight.p.txns.ids
		}
	}
	start := time.Now()
	s.prepare(w.open, batch)
	s.stats.busyNS.Add(int64(time.Since(start)))
}

// launch hands the open batch to the committer (or commits it at once when some of its jobs need
// the serial path after it).
func (w *pipeline) launch() {
	s, p := w.s, w.open
	w.open = nil
	s.seal(p)
	s.stats.batches.Add(1)
	if serial := p.serialJobs(); len(serial) > 0 {
		if err := s.commitPrepared(p); err != nil {
			s.forget(p)
		} else {
			s.committedTxns(p.txns)
		}
		s.runSerial(serial)
		return
	}
	w.flight = &inflight{p: p, done: make(chan error, 1)}
	w.commits <- w.flight
}

// settle takes the outcome of the batch in flight: its transaction IDs become committed ones, or
// its rooms leave the cache and the open batch, prepared on them, runs again on the serial path.
func (w *pipeline) settle(err error) {
	s, p := w.s, w.flight.p
	w.flight = nil
	if err == nil {
		s.committedTxns(p.txns)
		return
	}
	s.forget(p)
	if w.open != nil {
		again := w.open.jobs // its rooms are not in the cache yet: nothing to forget
		w.open = nil
		s.runSerial(again)
	}
}

// finish waits until nothing is pipelined: the batch in flight settled and the open one committed.
func (w *pipeline) finish() {
	for w.flight != nil || w.open != nil {
		if w.flight != nil {
			w.settle(<-w.flight.done)
			continue
		}
		w.launch()
	}
}

// runSerial runs jobs in one transaction on the writer goroutine (runBatch).
func (s *Service) runSerial(batch []*job) {
	start := time.Now()
	results := s.runBatch(batch)
	s.stats.busyNS.Add(int64(time.Since(start))) // before the answers: a caller may read the stats next
	for i, j := range batch {
		j.done <- results[i]
	}
}

// pipelinable says whether every job of the batch is a deferred one.
func pipelinable(batch []*job) bool {
	for _, j := range batch {
		if !j.deferred {
			return false
		}
	}
	return true
}

// prepare runs deferred jobs into p without a transaction, on the rooms p moved so far and the
// cached ones.
func (s *Service) prepare(p *prepared, batch []*job) {
	read := s.store.Read()
	for _, j := range batch {
		i := len(p.jobs)
		p.jobs = append(p.jobs, j)
		p.results = append(p.results, nil)
		p.serial = append(p.serial, false)
		if err := j.ctx.Err(); err != nil {
			p.results[i] = err
			continue
		}
		t := &txn{s: s, c: read, ctx: j.ctx, base: p.committed, rooms: map[string]*roomState{}, pos: p.alloc, rows: p.rows, txns: p.txns, pipelined: true,
			before: p.before}
		if err := j.fn(t); err != nil {
			p.rows.drop(t)
			p.txns.drop()
			if errors.Is(err, errSerial) {
				p.serial[i] = true
			} else {
				p.results[i] = err
			}
			continue
		}
		p.rows.keep(t)
		p.txns.keep()
		for id, rs := range t.rooms {
			p.committed[id] = rs
		}
		p.notices = append(p.notices, t.notices...)
		p.dests = append(p.dests, t.dests...)
	}
}

// seal ends a prepared batch before it is stored: its rooms become the cached ones, which the next
// batch builds on.
func (s *Service) seal(p *prepared) {
	p.last = p.alloc.next
	p.exts = map[string][]string{}
	for id, rs := range p.committed {
		if rs.extremitiesDirty {
			p.exts[id] = rs.extremities // replaced, never modified in place: safe to share
			rs.extremitiesDirty = false
		}
		s.rooms[id] = rs
		p.rooms = append(p.rooms, id)
	}
}

// commitPrepared stores a prepared batch in one transaction, then publishes its notices and
// answers its jobs (except those left to the serial path).
func (s *Service) commitPrepared(p *prepared) error {
	start := time.Now()
	events := p.rows.events // rebased in place below; flush lets go of them
	var err error
	if p.last > 0 || len(p.exts) > 0 {
		err = s.store.Write(context.Background(), func(c storage.Conn) error {
			if s.commitHook != nil {
				if err := s.commitHook(); err != nil {
					return err
				}
			}
			base, err := c.ReservePositions(context.Background(), storage.StreamEvents, p.last)
			if err != nil {
				return err
			}
			p.rows.rebase(base)
			p.base = base
			for i := range p.notices {
				p.notices[i].Pos += base
			}
			if err := p.rows.flush(context.Background(), c); err != nil {
				return err
			}
			for id, exts := range p.exts {
				if old := p.before[id]; len(old) == 1 && len(exts) == 1 {
					err := c.ReplaceForwardExtremity(context.Background(), id, old[0], exts[0])
					if !errors.Is(err, storage.ErrNotFound) {
						if err != nil {
							return err
						}
						continue
					}
				}
				if err := c.SetForwardExtremities(context.Background(), id, exts); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		s.log.Error("room write batch failed", "jobs", len(p.jobs), "err", err)
	} else {
		s.fresh.add(events)
		if fn := s.onBatch.Load(); fn != nil && p.last > 0 {
			(*fn)(Batch{After: p.base, Last: p.base + p.last, Events: events})
		}
		s.publish(p.notices, p.base, true) // plain timeline events only: no member event
		s.publishOutbound(p.dests)
	}
	s.stats.commitNS.Add(int64(time.Since(start)))
	for i, j := range p.jobs {
		if p.serial[i] {
			continue
		}
		if p.results[i] == nil {
			p.results[i] = err
		}
		j.done <- p.results[i]
	}
	return err
}

// Batch is a transaction of the room writer, as OnBatch reports it.
type Batch struct {
	// After and Last bound the positions a pipelined batch took (After < pos <= Last), each
	// that of one of Events; zero for a transaction of the serial path.
	After, Last int64
	// Events are a pipelined batch's events as stored, in position order: plain timeline events
	// (no state key, relation or membership), neither rejected nor soft-failed. Read-only.
	Events []storage.Event
}

// OnBatch registers fn, called on the writer with an empty Batch before each transaction of the
// serial path (which may change stored events: a redaction) and with each pipelined batch after
// it committed, before its notices go out. The sync service keeps its membership cache and its
// recent events current with it, without reading back what this node just wrote.
func (s *Service) OnBatch(fn func(Batch)) { s.onBatch.Store(&fn) }

// serialJobs are the jobs of p left to the serial path.
func (p *prepared) serialJobs() []*job {
	var out []*job
	for i, j := range p.jobs {
		if p.serial[i] {
			out = append(out, j)
		}
	}
	return out
}

// forget drops the rooms a batch changed from the cache: they are reloaded from the database.
func (s *Service) forget(p *prepared) {
	for _, id := range p.rooms {
		delete(s.rooms, id)
	}
}

// rebase turns the provisional positions of the rows (1, 2, ...) into positions after base.
func (d *deferredRows) rebase(base int64) {
	for i := range d.events {
		d.events[i].StreamPos += base
	}
	for i := range d.outbox {
		d.outbox[i].StreamPos += base
	}
}
