package sync

import (
	"context"
	gosync "sync"
	"sync/atomic"
	"testing"
)

// TestPositionCache: an answer is kept while the version stays put, read again once it moves, and
// not kept when the version moved while it was being read (it may predate the change).
func TestPositionCache(t *testing.T) {
	ctx := context.Background()
	var version, reads atomic.Uint64
	var counter atomic.Int64
	var during func() // runs inside the next read
	c := newPositionCache(version.Load, noOwn, func() uint64 { return 0 }, func(context.Context) (map[string]int64, error) {
		reads.Add(1)
		pos := map[string]int64{"events": counter.Load()}
		if during != nil {
			during()
			during = nil
		}
		return pos, nil
	})
	read := func(want int64, wantReads uint64) {
		t.Helper()
		pos, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pos["events"] != want || reads.Load() != wantReads {
			t.Fatalf("events %d after %d reads, want %d after %d", pos["events"], reads.Load(), want, wantReads)
		}
	}
	read(0, 1)
	read(0, 1) // kept
	counter.Store(1)
	version.Add(1)
	read(1, 2)
	read(1, 2)
	// A write commits while the read runs: that answer goes to its callers, but is not kept.
	version.Add(1)
	during = func() { counter.Store(2); version.Add(1) }
	read(1, 3)
	read(2, 4)
	read(2, 4)
}

// noOwn is a node that has written nothing.
func noOwn(map[string]int64) uint64 { return 0 }

// TestPositionCacheOwnWrites: the node's own committed values raise a kept answer without a read,
// each stream on its own and never lower it; a raised answer is made once per generation of them;
// a read (after the version moved) is raised too.
func TestPositionCacheOwnWrites(t *testing.T) {
	ctx := context.Background()
	var version, reads, gen atomic.Uint64
	var mu gosync.Mutex
	db := map[string]int64{"events": 5, "receipts": 3}
	own := map[string]int64{"events": 0, "receipts": 0}
	raises := 0
	write := func(stream string, pos int64) { // a commit of this node: the database and own values
		mu.Lock()
		db[stream], own[stream] = pos, pos
		mu.Unlock()
		gen.Add(1)
	}
	c := newPositionCache(version.Load, func(pos map[string]int64) uint64 {
		mu.Lock()
		defer mu.Unlock()
		raises++
		for st, p := range own {
			if _, ok := pos[st]; ok && p > pos[st] {
				pos[st] = p
			}
		}
		return gen.Load()
	}, gen.Load, func(context.Context) (map[string]int64, error) {
		reads.Add(1)
		mu.Lock()
		defer mu.Unlock()
		return map[string]int64{"events": db["events"], "receipts": db["receipts"]}, nil
	})
	read := func(events, receipts int64, wantReads uint64) {
		t.Helper()
		pos, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pos["events"] != events || pos["receipts"] != receipts || reads.Load() != wantReads {
			t.Fatalf("events %d receipts %d after %d reads, want %d, %d after %d", pos["events"], pos["receipts"],
				reads.Load(), events, receipts, wantReads)
		}
	}
	read(5, 3, 1)
	read(5, 3, 1)
	write("events", 6)
	read(6, 3, 1) // raised, not read
	before := raises
	read(6, 3, 1)
	if raises != before {
		t.Errorf("raised again for the same generation")
	}
	write("receipts", 4)
	write("events", 7)
	read(7, 4, 1)
	// Another node's write moves the version: read again, and raised by the node's own values.
	mu.Lock()
	db["receipts"] = 9
	mu.Unlock()
	version.Add(1)
	read(7, 9, 2)
	read(7, 9, 2)
}

// TestPositionCacheConcurrent: callers that miss together share one read, and everyone reading
// after a version change gets the change.
func TestPositionCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	var version, reads atomic.Uint64
	var counter atomic.Int64
	c := newPositionCache(version.Load, noOwn, func() uint64 { return 0 }, func(context.Context) (map[string]int64, error) {
		reads.Add(1)
		return map[string]int64{"events": counter.Load()}, nil
	})
	for round := int64(1); round <= 20; round++ {
		counter.Store(round)
		version.Add(1)
		var wg gosync.WaitGroup
		for range 50 {
			wg.Go(func() {
				pos, err := c.Read(ctx)
				if err != nil || pos["events"] != round {
					t.Errorf("round %d: events %d, %v", round, pos["events"], err)
				}
			})
		}
		wg.Wait()
	}
	if n := reads.Load(); n > 20*4 {
		t.Errorf("%d reads for 20 rounds of 50 callers: not shared", n)
	}
}

// TestMemberCacheQuietBatches: a batch without member events moves the membership cache on only
// if it starts where the cache is (a member event before it may not be applied yet).
func TestMemberCacheQuietBatches(t *testing.T) {
	m := &memberCache{applied: 10, lastChange: map[string]int64{}, users: map[string]memberEntry{}}
	m.applyQuiet(10, 14)
	m.applyQuiet(12, 13) // inside what is applied: no change
	if m.applied != 14 {
		t.Fatalf("applied %d, want 14", m.applied)
	}
	m.applyQuiet(15, 20) // position 15 not applied: maybe a member event
	if m.applied != 14 {
		t.Fatalf("applied %d after a gap, want 14", m.applied)
	}
	m.apply(nil, 15)
	m.applyQuiet(15, 20)
	if m.applied != 20 {
		t.Fatalf("applied %d, want 20", m.applied)
	}
}
