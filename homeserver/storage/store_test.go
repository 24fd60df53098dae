package storage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// mustWrite runs fn in a transaction and fails the test on error.
func mustWrite(t *testing.T, s *storage.Store, fn func(c storage.Conn) error) {
	t.Helper()
	if err := s.Write(context.Background(), fn); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// migrationCount is the number of migration files shipped with the package.
func migrationCount(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no migration files found")
	}
	return n
}

func TestMigrationsIdempotent(t *testing.T) {
	want := migrationCount(t)
	for _, backend := range storagetest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			opts := storagetest.Options(t, backend)
			first, err := storage.Open(ctx, opts)
			if err != nil {
				t.Fatalf("first open: %v", err)
			}
			if v, err := first.SchemaVersion(ctx); err != nil || v != want {
				t.Fatalf("SchemaVersion after first open = %d, %v; want %d", v, err, want)
			}
			// Data written before the second open must survive it: migrations must not run again.
			mustWrite(t, first, func(c storage.Conn) error {
				return c.CreateAccount(ctx, storage.Account{Localpart: "alice", CreatedTS: 1})
			})
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}

			second, err := storage.Open(ctx, opts)
			if err != nil {
				t.Fatalf("second open of the same database: %v", err)
			}
			defer second.Close()
			if second.Backend() != backend {
				t.Errorf("Backend() = %q, want %q", second.Backend(), backend)
			}
			if v, err := second.SchemaVersion(ctx); err != nil || v != want {
				t.Fatalf("SchemaVersion after second open = %d, %v; want %d", v, err, want)
			}
			if _, err := second.Read().Account(ctx, "alice"); err != nil {
				t.Fatalf("account written before reopening: %v", err)
			}
			if err := second.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		})
	}
}

func TestOpenUnknownBackend(t *testing.T) {
	if _, err := storage.Open(context.Background(), storage.Options{Backend: "mysql"}); err == nil {
		t.Fatal("Open with an unknown backend succeeded")
	}
	if _, err := storage.Open(context.Background(), storage.Options{Backend: "sqlite"}); err == nil {
		t.Fatal("Open of sqlite without a path succeeded")
	}
	if _, err := storage.Open(context.Background(), storage.Options{Backend: "postgres"}); err == nil {
		t.Fatal("Open of postgres without a DSN succeeded")
	}
}

func TestWriteRollsBackOnError(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		boom := errors.New("boom")
		err := s.Write(ctx, func(c storage.Conn) error {
			if err := c.CreateAccount(ctx, storage.Account{Localpart: "ghost", CreatedTS: 1}); err != nil {
				return err
			}
			if _, err := c.NextPosition(ctx, storage.StreamAccountData); err != nil {
				return err
			}
			// Inside the transaction the row is visible.
			if _, err := c.Account(ctx, "ghost"); err != nil {
				t.Errorf("account not visible inside its own transaction: %v", err)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Write returned %v, want the error of fn", err)
		}
		if _, err := s.Read().Account(ctx, "ghost"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("account after rollback: err = %v, want ErrNotFound", err)
		}
		if pos, err := s.Read().Position(ctx, storage.StreamAccountData); err != nil || pos != 0 {
			t.Fatalf("position after rollback = %d, %v; want 0", pos, err)
		}
		// The store is still usable after a rollback.
		mustWrite(t, s, func(c storage.Conn) error {
			return c.CreateAccount(ctx, storage.Account{Localpart: "ghost", CreatedTS: 1})
		})
	})
}

// TestAdvancePosition: n positions at once, on a new stream and on one in use, answered by the
// last of them (AdvancePosition) or the one before the first (ReservePositions, also for none);
// NextPosition goes on from there.
func TestAdvancePosition(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		var got []int64
		mustWrite(t, s, func(c storage.Conn) error {
			for _, n := range []int64{5, 3} {
				last, err := c.AdvancePosition(ctx, "test_advance", n)
				if err != nil {
					return err
				}
				got = append(got, last)
			}
			for _, n := range []int64{4, 0, 2} {
				base, err := c.ReservePositions(ctx, "test_advance", n)
				if err != nil {
					return err
				}
				got = append(got, base)
			}
			next, err := c.NextPosition(ctx, "test_advance")
			got = append(got, next)
			return err
		})
		if fmt.Sprint(got) != "[5 8 8 12 12 15]" {
			t.Fatalf("positions %v, want [5 8 8 12 12 15]", got)
		}
		if pos, err := s.Read().Position(ctx, "test_advance"); err != nil || pos != 15 {
			t.Fatalf("stored position %d, %v; want 15", pos, err)
		}
		// A stream's first use by ReservePositions.
		var base int64
		mustWrite(t, s, func(c storage.Conn) (err error) {
			base, err = c.ReservePositions(ctx, "test_reserve", 3)
			return err
		})
		if pos, err := s.Read().Position(ctx, "test_reserve"); err != nil || base != 0 || pos != 3 {
			t.Fatalf("first reservation: base %d, stored %d, %v; want 0 and 3", base, pos, err)
		}
	})
}

func TestNextPositionConcurrentWriters(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		const writers, perWriter = 8, 25
		var (
			mu   sync.Mutex
			got  []int64
			wg   sync.WaitGroup
			errs = make(chan error, writers)
		)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perWriter; i++ {
					var pos int64
					err := s.Write(ctx, func(c storage.Conn) error {
						var err error
						pos, err = c.NextPosition(ctx, "test_stream")
						return err
					})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					got = append(got, pos)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("writer: %v", err)
		}
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		if len(got) != writers*perWriter {
			t.Fatalf("got %d positions, want %d", len(got), writers*perWriter)
		}
		for i, p := range got {
			if p != int64(i+1) {
				t.Fatalf("positions are not unique and gap-free 1..%d: sorted[%d] = %d", writers*perWriter, i, p)
			}
		}
		if pos, err := s.Read().Position(ctx, "test_stream"); err != nil || pos != writers*perWriter {
			t.Fatalf("Position = %d, %v; want %d", pos, err, writers*perWriter)
		}
		// Streams are independent.
		if pos, err := s.Read().Position(ctx, "other_stream"); err != nil || pos != 0 {
			t.Fatalf("Position of an unused stream = %d, %v; want 0", pos, err)
		}
	})
}

func TestRegistrationNonce(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.InsertRegistrationNonce(ctx, "fresh", 2000); err != nil {
				return err
			}
			return c.InsertRegistrationNonce(ctx, "stale", 1000)
		})
		take := func(nonce string, now int64) bool {
			t.Helper()
			var ok bool
			mustWrite(t, s, func(c storage.Conn) error {
				var err error
				ok, err = c.TakeRegistrationNonce(ctx, nonce, now)
				return err
			})
			return ok
		}
		if !take("fresh", 1500) {
			t.Fatal("fresh nonce not accepted")
		}
		if take("fresh", 1500) {
			t.Fatal("nonce accepted a second time")
		}
		if take("stale", 1500) {
			t.Fatal("expired nonce accepted")
		}
		if take("unknown", 0) {
			t.Fatal("unknown nonce accepted")
		}
	})
}

func TestPurgeExpired(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			for _, err := range []error{
				c.InsertOpenIDToken(ctx, "old", "alice", 1000),
				c.InsertOpenIDToken(ctx, "new", "alice", 3000),
				c.InsertRegistrationNonce(ctx, "old", 1000),
				c.InsertRegistrationNonce(ctx, "new", 3000),
			} {
				if err != nil {
					return err
				}
			}
			return c.PurgeExpired(ctx, 2000)
		})
		if _, _, err := s.Read().OpenIDToken(ctx, "old"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("expired OpenID token: err = %v, want ErrNotFound", err)
		}
		if lp, exp, err := s.Read().OpenIDToken(ctx, "new"); err != nil || lp != "alice" || exp != 3000 {
			t.Errorf("unexpired OpenID token = %q, %d, %v", lp, exp, err)
		}
		var oldOK, newOK bool
		mustWrite(t, s, func(c storage.Conn) error {
			var err error
			if oldOK, err = c.TakeRegistrationNonce(ctx, "old", 0); err != nil {
				return err
			}
			newOK, err = c.TakeRegistrationNonce(ctx, "new", 0)
			return err
		})
		if oldOK || !newOK {
			t.Errorf("after purge: old nonce present = %v (want false), new nonce present = %v (want true)", oldOK, newOK)
		}
	})
}

// TestConcurrentMigrations opens several stores on one empty database at once, as several nodes
// starting together would: all must come up with the full schema.
func TestConcurrentMigrations(t *testing.T) {
	for _, backend := range storagetest.Backends {
		t.Run(backend, func(t *testing.T) {
			opts := storagetest.Options(t, backend)
			errs := make(chan error, 4)
			for i := 0; i < 4; i++ {
				go func() {
					s, err := storage.Open(context.Background(), opts)
					if err == nil {
						s.Close()
					}
					errs <- err
				}()
			}
			for i := 0; i < 4; i++ {
				if err := <-errs; err != nil {
					t.Fatalf("concurrent start %d: %v", i, err)
				}
			}
		})
	}
}

// TestWriteRetryAfterDeadlock: two transactions that lock two rows in opposite orders deadlock on
// PostgreSQL; the one it aborts runs again under WriteRetry, and both succeed. (SQLite has one
// writer: no deadlock to break.)
func TestWriteRetryAfterDeadlock(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		if s.Backend() != "postgres" {
			t.Skip("one writer on SQLite")
		}
		ctx := context.Background()
		for _, n := range []string{"dl_a", "dl_b"} {
			if err := s.Write(ctx, func(c storage.Conn) error { _, err := c.NextPosition(ctx, n); return err }); err != nil {
				t.Fatal(err)
			}
		}
		first := make(chan struct{}, 2)
		var runs [2]int
		txn := func(i int, a, b string) error {
			return s.WriteRetry(ctx, func(c storage.Conn) error {
				runs[i]++
				if _, err := c.LockPosition(ctx, a); err != nil {
					return err
				}
				if runs[i] == 1 {
					first <- struct{}{}
					for len(first) < 2 { // both hold their first row before asking for the second
						time.Sleep(time.Millisecond)
					}
				}
				_, err := c.LockPosition(ctx, b)
				return err
			})
		}
		errs := make(chan error, 2)
		go func() { errs <- txn(0, "dl_a", "dl_b") }()
		go func() { errs <- txn(1, "dl_b", "dl_a") }()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("WriteRetry: %v", err)
			}
		}
		if runs[0]+runs[1] < 3 {
			t.Fatalf("no transaction ran twice (runs %v): the test did not deadlock", runs)
		}
	})
}

// TestLockPositionConcurrentWriters: transactions that each take 3 positions with LockPosition
// and SetPosition, concurrently, starting with a stream that has no row yet, get disjoint runs.
func TestLockPositionConcurrentWriters(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		const writers, perWriter, take = 8, 20, 3
		var mu sync.Mutex
		seen := map[int64]bool{}
		errs := make(chan error, writers)
		var wg sync.WaitGroup
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perWriter {
					var base int64
					err := s.Write(ctx, func(c storage.Conn) error {
						var err error
						if base, err = c.LockPosition(ctx, "locked_stream"); err != nil {
							return err
						}
						return c.SetPosition(ctx, "locked_stream", base+take)
					})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for p := base + 1; p <= base+take; p++ {
						if seen[p] {
							errs <- fmt.Errorf("position %d taken twice", p)
						}
						seen[p] = true
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if pos, err := s.Read().Position(ctx, "locked_stream"); err != nil || pos != writers*perWriter*take || len(seen) != int(pos) {
			t.Fatalf("Position = %d, %v; %d positions taken", pos, err, len(seen))
		}
	})
}
