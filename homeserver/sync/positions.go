package sync

import (
	"context"
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/coalesce"
)

// The stream positions every response starts from (stream_counters), kept between reads. At
// fan-out nearly every wake-up found the counters where the previous one had read them, and
// reading them again was an eighth of the server's CPU.
//
// A kept answer is used only while its version is current. The version moves with every write
// transaction this node commits (storage.Store.Commits) and with every notice of the bus that
// announces a change (room events, account data, receipts, wake-ups, device changes: the writes of
// other nodes). Every write that moves a counter is one of these, so a read of the counters that
// starts after the version was v answers what a read now would, as long as the version is still
// v. Answers are stored only if the version did not move while they were read.
//
// Why no wake-up is lost: a sync calls Listen, then reads the positions. A change committed on
// this node moved the version when its transaction returned, before its notice went out; a change
// of another node moves the version as its notice arrives, before the notifier wakes anyone. So a
// sync that listened too late to be woken by a change gets a fresh read, which holds it; one that
// listened in time is woken and reads again.
type positionCache struct {
	version func() uint64
	reader  *coalesce.Reader[versioned]

	mu   gosync.Mutex
	kept versioned
	ok   bool
}

// versioned are positions read when the version was v. The map is shared: never modified.
type versioned struct {
	pos map[string]int64
	v   uint64
}

// newPositionCache keeps the answers of read; version moves when they may have changed.
// Misses are read once for all the callers that miss together (coalesce.Reader).
func newPositionCache(version func() uint64, read func(context.Context) (map[string]int64, error)) *positionCache {
	c := &positionCache{version: version}
	c.reader = coalesce.NewReader(func(ctx context.Context) (versioned, error) {
		v := c.version()
		pos, err := read(ctx)
		if err != nil {
			return versioned{}, err
		}
		got := versioned{pos: pos, v: v}
		c.mu.Lock()
		if c.version() == v {
			c.kept, c.ok = got, true
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
		pos := c.kept.pos
		c.mu.Unlock()
		return pos, nil
	}
	c.mu.Unlock()
	got, err := c.reader.Read(ctx)
	return got.pos, err
}
