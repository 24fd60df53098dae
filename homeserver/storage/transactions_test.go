package storage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestTransactionEvents looks transaction IDs up in bulk: a key matches only when all three of
// its fields do, and more keys than one statement binds are split across statements.
func TestTransactionEvents(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		stored := []storage.Transaction{
			{Localpart: "alice", DeviceID: "D1", TxnID: "t1", EventID: "$a1", TS: 1},
			{Localpart: "alice", DeviceID: "D1", TxnID: "t2", EventID: "$a2", TS: 2},
			{Localpart: "alice", DeviceID: "D2", TxnID: "t1", EventID: "$a3", TS: 3},
			{Localpart: "bob", DeviceID: "D1", TxnID: "t1", EventID: "$b1", TS: 4},
		}
		for i := 0; i < 700; i++ {
			stored = append(stored, storage.Transaction{Localpart: "carol", DeviceID: "D1", TxnID: fmt.Sprint("bulk", i),
				EventID: fmt.Sprint("$c", i), TS: 5})
		}
		if err := s.Write(ctx, func(c storage.Conn) error { return c.InsertTransactions(ctx, stored) }); err != nil {
			t.Fatal(err)
		}
		want := map[storage.Transaction]string{}
		var keys []storage.Transaction
		for _, tr := range stored {
			k := storage.Transaction{Localpart: tr.Localpart, DeviceID: tr.DeviceID, TxnID: tr.TxnID}
			keys = append(keys, k)
			want[k] = tr.EventID
		}
		// Each differs from a stored key in one field only.
		keys = append(keys,
			storage.Transaction{Localpart: "alice", DeviceID: "D1", TxnID: "t3"},
			storage.Transaction{Localpart: "alice", DeviceID: "D3", TxnID: "t2"},
			storage.Transaction{Localpart: "dave", DeviceID: "D1", TxnID: "t1"})
		got, err := s.Read().TransactionEvents(ctx, keys)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("found %d transaction IDs, want %d", len(got), len(want))
		}
		for k, id := range want {
			if got[k] != id {
				t.Errorf("%+v: got %q, want %q", k, got[k], id)
			}
		}
	})
}

// TestTransactionEventsUsePrimaryKey guards the SQLite plan of the lookup each batch of sends
// makes: it must search the primary key, not scan a table that holds every transaction ID ever
// used.
func TestTransactionEventsUsePrimaryKey(t *testing.T) {
	s := storagetest.Open(t, "sqlite")
	for _, n := range []int{1, 20} {
		plan, err := s.ExplainTransactionEvents(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		// The table is WITHOUT ROWID (migration 0016): its B-tree is the primary key.
		if strings.Contains(plan, "SCAN transaction_ids") || !strings.Contains(plan, "SEARCH transaction_ids USING PRIMARY KEY") {
			t.Errorf("lookup of %d transaction IDs does not search the primary key:\n%s", n, plan)
		}
	}
}

// TestBatchInsertConflict: a repeated key in a batch insert (INSERT OR FAIL on SQLite, which may
// leave the rows before it in place) is ErrConflict, and the Write that gives up on it keeps
// nothing, not even what it wrote before; the single-row InsertTransaction is ErrConflict too, and
// the writer stays usable after both.
func TestBatchInsertConflict(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		first := storage.Transaction{Localpart: "alice", DeviceID: "D1", TxnID: "t1", EventID: "$a1", TS: 1}
		if err := s.Write(ctx, func(c storage.Conn) error { return c.InsertTransaction(ctx, first) }); err != nil {
			t.Fatal(err)
		}
		before := storage.Transaction{Localpart: "bob", DeviceID: "D1", TxnID: "t1", EventID: "$b1", TS: 2}
		err := s.Write(ctx, func(c storage.Conn) error {
			if err := c.InsertTransaction(ctx, before); err != nil {
				return err
			}
			again := first
			again.EventID = "$a2"
			return c.InsertTransactions(ctx, []storage.Transaction{
				{Localpart: "carol", DeviceID: "D1", TxnID: "t1", EventID: "$c1", TS: 3}, again})
		})
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("a repeated transaction ID in a batch: %v, want ErrConflict", err)
		}
		err = s.Write(ctx, func(c storage.Conn) error { return c.InsertTransaction(ctx, first) })
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("a repeated transaction ID: %v, want ErrConflict", err)
		}
		got, err := s.Read().TransactionEvents(ctx, []storage.Transaction{
			{Localpart: "alice", DeviceID: "D1", TxnID: "t1"},
			{Localpart: "bob", DeviceID: "D1", TxnID: "t1"},
			{Localpart: "carol", DeviceID: "D1", TxnID: "t1"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[storage.Transaction{Localpart: "alice", DeviceID: "D1", TxnID: "t1"}] != "$a1" {
			t.Fatalf("stored %v, want only alice's first transaction", got)
		}
		// The writer goes on.
		if err := s.Write(ctx, func(c storage.Conn) error { return c.InsertTransaction(ctx, before) }); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriteCancelledIsRolledBack: a Write whose context ends before it commits keeps nothing.
func TestWriteCancelledIsRolledBack(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx, cancel := context.WithCancel(context.Background())
		tr := storage.Transaction{Localpart: "alice", DeviceID: "D1", TxnID: "t1", EventID: "$a1", TS: 1}
		err := s.Write(ctx, func(c storage.Conn) error {
			err := c.InsertTransaction(ctx, tr)
			cancel()
			return err
		})
		if err == nil {
			t.Fatal("a cancelled Write committed")
		}
		got, err := s.Read().TransactionEvents(context.Background(), []storage.Transaction{{Localpart: "alice", DeviceID: "D1", TxnID: "t1"}})
		if err != nil || len(got) != 0 {
			t.Fatalf("after a cancelled Write: %v, %v; want nothing stored", got, err)
		}
		if err := s.Write(context.Background(), func(c storage.Conn) error { return c.InsertTransaction(context.Background(), tr) }); err != nil {
			t.Fatal(err)
		}
	})
}
