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
	c := newPositionCache(version.Load, func(context.Context) (map[string]int64, error) {
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

// TestPositionCacheConcurrent: callers that miss together share one read, and everyone reading
// after a version change gets the change.
func TestPositionCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	var version, reads atomic.Uint64
	var counter atomic.Int64
	c := newPositionCache(version.Load, func(context.Context) (map[string]int64, error) {
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
