package storage

import (
	gosync "sync"
	"sync/atomic"
)

// written keeps the stream positions this Store's own transactions committed, for the streams
// asked for with TrackPositions, so that a reader of positions on this node need not ask the
// database after each of its own writes. On PostgreSQL that read is a round trip, and at fan-out
// every woken /sync waited for one after each message (a busy Go runtime polls the network only
// every 10 ms).
type written struct {
	mu     gosync.Mutex
	pos    map[string]int64 // tracked streams only
	gen    atomic.Uint64    // moves with every change of pos
	unsure atomic.Uint64    // commits whose outcome is unknown (Unsure)
}

// positionMove is a counter value a write transaction set.
type positionMove struct {
	stream string
	pos    int64
}

// moved records that the transaction of c set stream's counter to pos.
func (c Conn) moved(stream string, pos int64) {
	if c.moves != nil {
		*c.moves = append(*c.moves, positionMove{stream, pos})
	}
}

// TrackPositions makes the Store keep what its own committed transactions set the counters of
// streams to (WrittenPositions). Call it before the first Write.
func (s *Store) TrackPositions(streams ...string) {
	s.written.mu.Lock()
	defer s.written.mu.Unlock()
	if s.written.pos == nil {
		s.written.pos = map[string]int64{}
	}
	for _, st := range streams {
		if _, ok := s.written.pos[st]; !ok {
			s.written.pos[st] = 0
		}
	}
}

// committed applies the moves of a transaction that committed. Counters only grow, so the
// highest value wins whatever order concurrent transactions' moves arrive in.
func (s *Store) committed(moves []positionMove) {
	if len(moves) == 0 {
		return
	}
	s.written.mu.Lock()
	changed := false
	for _, m := range moves {
		if cur, ok := s.written.pos[m.stream]; ok && m.pos > cur {
			s.written.pos[m.stream] = m.pos
			changed = true
		}
	}
	if changed {
		s.written.gen.Add(1)
	}
	s.written.mu.Unlock()
}

// WrittenPositions raises each tracked stream's position in pos (absent: 0) to what this Store's
// own transactions committed, if higher, and returns the generation of those values: it moves each
// time they change. A transaction's values are in place before its Write returns.
func (s *Store) WrittenPositions(pos map[string]int64) uint64 {
	s.written.mu.Lock()
	defer s.written.mu.Unlock()
	for st, p := range s.written.pos {
		if p > pos[st] { // a stream without a counter yet is at 0
			pos[st] = p
		}
	}
	return s.written.gen.Load()
}

// WrittenGeneration is the generation WrittenPositions would return now.
func (s *Store) WrittenGeneration() uint64 { return s.written.gen.Load() }

// Unsure counts the commits of this Store whose outcome it does not know (the COMMIT failed on
// the way back): what they wrote is only known to the database, so a cache of positions must read
// them again when it moves.
func (s *Store) Unsure() uint64 { return s.written.unsure.Load() }
