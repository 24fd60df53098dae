package coalesce

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A Read never answers with a read that started before it was called.
func TestReaderReadsAfterTheCall(t *testing.T) {
	var value atomic.Int64
	var reads atomic.Int64
	r := NewReader(func(ctx context.Context) (int64, error) {
		reads.Add(1)
		v := value.Load()
		time.Sleep(5 * time.Millisecond)
		return v, nil
	})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i%20) * time.Millisecond)
			want := value.Add(1) // a write the caller has seen
			got, err := r.Read(context.Background())
			if err != nil || got < want {
				t.Errorf("Read = %d, %v; the caller had seen %d", got, err, want)
			}
		}()
	}
	wg.Wait()
	if n := reads.Load(); n >= 200 {
		t.Errorf("%d reads for 200 callers: nothing shared", n)
	}
}

func TestCacheSharesAndForgetsFailures(t *testing.T) {
	c := NewCache[string, int](time.Minute, 10)
	var calls atomic.Int64
	release := make(chan struct{})
	fn := func(ctx context.Context) (int, error) {
		calls.Add(1)
		<-release
		return 7, nil
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := c.Get(context.Background(), "k", fn); v != 7 || err != nil {
				t.Errorf("Get = %d, %v", v, err)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if v, _ := c.Get(context.Background(), "k", fn); v != 7 || calls.Load() != 1 {
		t.Errorf("value %d after %d reads, want 7 after 1", v, calls.Load())
	}
	boom := errors.New("boom")
	if _, err := c.Get(context.Background(), "bad", func(context.Context) (int, error) { return 0, boom }); err != boom {
		t.Fatalf("err = %v", err)
	}
	if v, err := c.Get(context.Background(), "bad", func(context.Context) (int, error) { return 3, nil }); v != 3 || err != nil {
		t.Errorf("a failed read was kept: %d, %v", v, err)
	}
}

func TestCacheExpires(t *testing.T) {
	c := NewCache[string, int](10*time.Millisecond, 10)
	c.Get(context.Background(), "k", func(context.Context) (int, error) { return 1, nil })
	time.Sleep(20 * time.Millisecond)
	if v, _ := c.Get(context.Background(), "k", func(context.Context) (int, error) { return 2, nil }); v != 2 {
		t.Errorf("expired answer kept: %d", v)
	}
}

// Peek answers only with a kept answer of a read that ended well, within ttl; it never reads.
func TestCachePeek(t *testing.T) {
	c := NewCache[string, int](50*time.Millisecond, 10)
	if _, ok := c.Peek("a"); ok {
		t.Fatal("Peek answered before any read")
	}
	ctx := context.Background()
	if _, err := c.Get(ctx, "a", func(context.Context) (int, error) { return 7, nil }); err != nil {
		t.Fatal(err)
	}
	if v, ok := c.Peek("a"); !ok || v != 7 {
		t.Fatalf("Peek after a read: %d, %v; want 7, true", v, ok)
	}
	_, _ = c.Get(ctx, "b", func(context.Context) (int, error) { return 0, errors.New("failed") })
	if _, ok := c.Peek("b"); ok {
		t.Fatal("Peek answered with a failed read")
	}
	time.Sleep(60 * time.Millisecond)
	if _, ok := c.Peek("a"); ok {
		t.Fatal("Peek answered after ttl")
	}
}
