package sync

import (
	"context"
	"maps"
	gosync "sync"
	"sync/atomic"

	"github.com/hearthmx/homeserver/homeserver/coalesce"
)

// The stream positions every response starts from (stream_counters), kept between reads. At
// fan-out nearly every wake-up found the counters where the previous one had read them, and
// reading them again was an eighth of the server's CPU; on PostgreSQL it was also a round trip that
// every woken sync waited for after each message.
//
// An answer is a read of the database, raised to the values this node's own transactions
// committed since (storage.Store.WrittenPositions: in place before a transaction's Write returns,
// so before its notice goes out). The read is kept while its version holds. The version moves
// when something may have moved a counter that the node's own values do not show: a commit whose
// outcome is unknown (storage.Store.Unsure) and, when other nodes share the database (an external
// bus), every notice of the bus, which announces their writes. A read of the database that starts
// after the version was v, raised to the node's own values, answers what a read now would, as long
// as the version is still v. Reads are stored only if the version did not move while they ran.
//
// Why no wake-up is lost: a sync calls Listen, then reads the positions. A change committed on
// this node is among its own values when its transaction returns, before its notice goes out; a
// change of another node moves the version as its notice arrives, before the notifier wakes anyone.
// So a sync that listened too late to be woken by a change sees it in its answer; one that listened
// in time is woken and reads again.
type positionCache struct {
	version func() uint64
	// own raises the positions in a map to this node's committed ones and returns their
	// generation; ownGen is that generation now.
	own    func(map[string]int64) uint64
	ownGen func() uint64
	reader *coalesce.Reader[versioned]
	reads  atomic.Int64 // reads of the database (tests)

	mu     gosync.Mutex
	kept   versioned
	ok     bool
	raised versioned // kept raised to the node's own values of generation raised.v
	rok    bool
}

// versioned are positions read when the version was v. The map is shared: never modified.
type versioned struct {
	pos map[string]int64
	v   uint64
}

// newPositionCache keeps the answers of read; version moves when they may have changed other
// than by this node's own writes, which own and ownGen give. Misses are read once for all the
// callers that miss together (coalesce.Reader).
func newPositionCache(version func() uint64, own func(map[string]int64) uint64, ownGen func() uint64,
	read func(context.Context) (map[string]int64, error)) *positionCache {
	c := &positionCache{version: version, own: own, ownGen: ownGen}
	c.reader = coalesce.NewReader(func(ctx context.Context) (versioned, error) {
		v := c.version()
		c.reads.Add(1)
		pos, err := read(ctx)
		if err != nil {
			return versioned{}, err
		}
		got := versioned{pos: pos, v: v}
		c.mu.Lock()
		if c.version() == v {
			c.kept, c.ok, c.rok = got, true, false
		}
		c.mu.Unlock()
		return got, nil
	})
	return c
}

// Read returns the positions as a read started now would (or newer). Callers must not modify the
// map.
func (c *positionCache) Read(ctx context.Context) (map[string]int64, error) {
	v := c.version()
	c.mu.Lock()
	if c.ok && c.kept.v == v {
		pos := c.raise()
		c.mu.Unlock()
		return pos, nil
	}
	c.mu.Unlock()
	got, err := c.reader.Read(ctx)
	if err != nil {
		return nil, err
	}
	pos := maps.Clone(got.pos)
	c.own(pos)
	return pos, nil
}

// raise returns the kept positions raised to the node's own values, made once per generation of
// those. Called with mu held.
func (c *positionCache) raise() map[string]int64 {
	g := c.ownGen()
	if c.rok && c.raised.v == g {
		return c.raised.pos
	}
	pos := maps.Clone(c.kept.pos)
	c.raised = versioned{pos: pos, v: c.own(pos)}
	c.rok = true
	return pos
}
