// Package coalesce shares reads among the many requests that want the same thing at about the same
// time: the /sync connections a message wakes together.
//
// Two shapes:
//   - Reader: a read whose answer changes over time (stream positions). A caller joins a read
//     that has not started yet, never one already under way, so what it gets was read after it
//     asked: exactly what a read of its own would give it, or newer.
//   - Cache: a read whose answer is fixed by its key (events of a room between two committed
//     stream positions). Callers with the same key share one read, and its answer is kept for a
//     short time for the callers that come a little later.
package coalesce

import (
	"context"
	"sync"
	"time"
)

// Reader runs fn once for every group of callers that arrive while the previous read runs.
type Reader[V any] struct {
	fn func(context.Context) (V, error)

	mu      sync.Mutex
	next    *flight[V] // the read that starts when the running one ends
	running bool
}

type flight[V any] struct {
	done chan struct{}
	val  V
	err  error
}

// NewReader returns a Reader of fn.
func NewReader[V any](fn func(context.Context) (V, error)) *Reader[V] {
	return &Reader[V]{fn: fn}
}

// Read returns the answer of a read of fn that started after Read was called. The read runs on a
// context of its own (callers that go away do not fail the others).
func (r *Reader[V]) Read(ctx context.Context) (V, error) {
	r.mu.Lock()
	f := r.next
	if f == nil {
		f = &flight[V]{done: make(chan struct{})}
		r.next = f
	}
	if !r.running {
		r.running = true
		go r.run()
	}
	r.mu.Unlock()
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

func (r *Reader[V]) run() {
	for {
		r.mu.Lock()
		f := r.next
		r.next = nil
		if f == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		f.val, f.err = r.fn(ctx)
		cancel()
		close(f.done)
	}
}

// Cache shares the reads of equal keys while they run and for ttl after they end. Failed reads
// are not kept. At most max answers are kept; past that, reads are still shared while they run.
type Cache[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[K]*entry[V]
}

type entry[V any] struct {
	flight[V]
	ended time.Time // zero while running
}

// NewCache returns a Cache that keeps answers for ttl, at most max of them.
func NewCache[K comparable, V any](ttl time.Duration, max int) *Cache[K, V] {
	return &Cache[K, V]{ttl: ttl, max: max, m: map[K]*entry[V]{}}
}

// Get returns the answer for key: a kept one, the one of a read of the key under way, or that of
// fn, run now.
func (c *Cache[K, V]) Get(ctx context.Context, key K, fn func(context.Context) (V, error)) (V, error) {
	now := time.Now()
	c.mu.Lock()
	e := c.m[key]
	if e != nil && !e.ended.IsZero() && now.Sub(e.ended) > c.ttl {
		delete(c.m, key)
		e = nil
	}
	if e == nil {
		if len(c.m) >= c.max {
			c.sweep(now)
		}
		e = &entry[V]{flight: flight[V]{done: make(chan struct{})}}
		c.m[key] = e
		c.mu.Unlock()
		e.val, e.err = fn(ctx)
		c.mu.Lock()
		e.ended = time.Now()
		if e.err != nil || len(c.m) > c.max {
			if c.m[key] == e {
				delete(c.m, key)
			}
		}
		c.mu.Unlock()
		close(e.done)
		return e.val, e.err
	}
	c.mu.Unlock()
	select {
	case <-e.done:
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
	if e.err != nil {
		// The reader's own failure (its context, say) is not ours: read again.
		return fn(ctx)
	}
	return e.val, nil
}

// Peek returns the kept answer for key, if a read of it ended well less than ttl ago; it never
// reads, nor waits for a read under way.
func (c *Cache[K, V]) Peek(key K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[key]; e != nil && !e.ended.IsZero() && e.err == nil && time.Since(e.ended) <= c.ttl {
		return e.val, true
	}
	var zero V
	return zero, false
}

// sweep drops the answers kept longer than ttl. Called with mu held.
func (c *Cache[K, V]) sweep(now time.Time) {
	for k, e := range c.m {
		if !e.ended.IsZero() && now.Sub(e.ended) > c.ttl {
			delete(c.m, k)
		}
	}
}
