package storage_test

import (
	"context"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func TestBackfillPositionsAndExtremities(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()

		// Blocks of positions go down, each below the previous one, and never touch the events
		// stream.
		var first, second int64
		mustWrite(t, s, func(c storage.Conn) (err error) {
			first, err = c.BackfillPositions(ctx, 3)
			return err
		})
		mustWrite(t, s, func(c storage.Conn) (err error) {
			second, err = c.BackfillPositions(ctx, 2)
			return err
		})
		if first != -3 || second != -5 {
			t.Errorf("blocks start at %d and %d, want -3 (-3..-1) and -5 (-5..-4)", first, second)
		}
		if pos, err := s.Read().Position(ctx, storage.StreamEvents); err != nil || pos != 0 {
			t.Errorf("events stream at %d, %v", pos, err)
		}

		// Extremities: deepest first; added again, a row keeps its retry time; deferred and
		// deleted per room.
		mustWrite(t, s, func(c storage.Conn) error {
			return c.AddBackfillExtremities(ctx, "!r:a", []storage.BackfillExtremity{{EventID: "$a", Depth: 5}, {EventID: "$b", Depth: 9}})
		})
		mustWrite(t, s, func(c storage.Conn) error {
			return c.AddBackfillExtremities(ctx, "!other:a", []storage.BackfillExtremity{{EventID: "$a", Depth: 1}})
		})
		mustWrite(t, s, func(c storage.Conn) error { return c.DeferBackfillExtremities(ctx, "!r:a", []string{"$a"}, 1000) })
		mustWrite(t, s, func(c storage.Conn) error {
			return c.AddBackfillExtremities(ctx, "!r:a", []storage.BackfillExtremity{{EventID: "$a", Depth: 7}, {EventID: "$c", Depth: 6}})
		})
		exts, err := s.Read().BackfillExtremities(ctx, "!r:a")
		want := []storage.BackfillExtremity{{EventID: "$b", Depth: 9}, {EventID: "$c", Depth: 6}, {EventID: "$a", Depth: 5, NextTry: 1000}}
		if err != nil || !slices.Equal(exts, want) {
			t.Fatalf("extremities %+v, %v; want %+v", exts, err, want)
		}
		mustWrite(t, s, func(c storage.Conn) error {
			return c.DeleteBackfillExtremities(ctx, "!r:a", []string{"$a", "$b", "$c"})
		})
		if exts, err := s.Read().BackfillExtremities(ctx, "!r:a"); err != nil || len(exts) != 0 {
			t.Errorf("after delete: %+v, %v", exts, err)
		}
		if exts, err := s.Read().BackfillExtremities(ctx, "!other:a"); err != nil || len(exts) != 1 || exts[0].NextTry != 0 {
			t.Errorf("other room's extremities: %+v, %v", exts, err)
		}
	})
}
