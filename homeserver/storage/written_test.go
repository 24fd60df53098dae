package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestWrittenPositions: the Store knows what its committed transactions set its tracked counters
// to (NextPosition, ReservePositions, SetPosition), by the time Write returns; a rolled-back
// transaction and untracked streams leave nothing; the generation moves with every change.
func TestWrittenPositions(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		s.TrackPositions("test_a", "test_b")
		written := func() (map[string]int64, uint64) {
			pos := map[string]int64{"test_a": 0, "test_c": 7}
			g := s.WrittenPositions(pos)
			return pos, g
		}
		pos, g0 := written()
		if pos["test_a"] != 0 || pos["test_b"] != 0 || pos["test_c"] != 7 {
			t.Fatalf("before any write: %v", pos)
		}
		mustWrite(t, s, func(c storage.Conn) error {
			if _, err := c.NextPosition(ctx, "test_a"); err != nil {
				return err
			}
			if _, err := c.ReservePositions(ctx, "test_b", 4); err != nil {
				return err
			}
			_, err := c.NextPosition(ctx, "test_c") // not tracked
			return err
		})
		pos, g1 := written()
		if pos["test_a"] != 1 || pos["test_b"] != 4 || pos["test_c"] != 7 || g1 == g0 {
			t.Fatalf("after a commit: %v, generation %d -> %d", pos, g0, g1)
		}
		failed := errors.New("no")
		if err := s.Write(ctx, func(c storage.Conn) error {
			if _, err := c.ReservePositions(ctx, "test_a", 10); err != nil {
				return err
			}
			return failed
		}); !errors.Is(err, failed) {
			t.Fatalf("rolled back write: %v", err)
		}
		pos, g2 := written()
		if pos["test_a"] != 1 || g2 != g1 {
			t.Fatalf("after a rollback: %v, generation %d -> %d", pos, g1, g2)
		}
		if db, err := s.Read().Position(ctx, "test_a"); err != nil || db != 1 {
			t.Fatalf("database: %d, %v", db, err)
		}
		// Never lowered: a value below the one known is ignored.
		mustWrite(t, s, func(c storage.Conn) error { return c.SetPosition(ctx, "test_b", 2) })
		if pos, _ := written(); pos["test_b"] != 4 {
			t.Fatalf("lowered to %d", pos["test_b"])
		}
		if s.Unsure() != 0 {
			t.Fatalf("Unsure %d without a failed commit", s.Unsure())
		}
	})
}
