package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// BenchmarkInsertEventsChunk stores 1,000 state events (as outliers, the rows of a room being
// joined) in one transaction, in statements of so many rows each (InsertEvents caps them at
// eventRowsPerInsert): what a statement of more rows saves (round trips, statement overhead)
// against what binding more parameters costs.
//
//	go test ./homeserver/storage -run '^$' -bench InsertEventsChunk -benchtime 10x
func BenchmarkInsertEventsChunk(b *testing.B) {
	const perOp = 1000
	pdu := []byte(`{"content":{"membership":"join","displayname":"` + strings.Repeat("x", 300) + `"}}`)
	for _, backend := range storagetest.Backends {
		b.Run(backend, func(b *testing.B) {
			s := storagetest.Open(b, backend)
			ctx := context.Background()
			for _, rows := range []int{1, 4, 8, 16} {
				b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
					op := 0
					for b.Loop() {
						evs := make([]storage.Event, perOp)
						for i := range evs {
							sk := fmt.Sprintf("@u%d:x", i)
							evs[i] = storage.Event{EventID: fmt.Sprintf("$r%d-%d-%d", rows, op, i), RoomID: "!r:x", Type: "m.room.member",
								StateKey: &sk, Sender: sk, Depth: int64(i), Membership: "join", Outlier: true, PDU: pdu, ClientJSON: pdu,
								PrevEvents: []string{fmt.Sprintf("$p%d", i)}}
						}
						op++
						err := s.Write(ctx, func(c storage.Conn) error {
							for len(evs) > 0 {
								n := min(rows, len(evs))
								if err := c.InsertEvents(ctx, evs[:n]); err != nil {
									return err
								}
								evs = evs[n:]
							}
							return nil
						})
						if err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*perOp), "µs/event")
				})
			}
		})
	}
}

// BenchmarkSetCurrentStatesChunk writes the current state of a room of 2,000 members, rows
// entries per SetCurrentStates call (so per statement, up to stateRowsPerInsert).
//
//	go test ./homeserver/storage -run '^$' -bench SetCurrentStatesChunk -benchtime 10x
func BenchmarkSetCurrentStatesChunk(b *testing.B) {
	const perOp = 2000
	for _, backend := range storagetest.Backends {
		b.Run(backend, func(b *testing.B) {
			s := storagetest.Open(b, backend)
			ctx := context.Background()
			for _, rows := range []int{1, 8, 16, 64} {
				b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
					op := 0
					for b.Loop() {
						all := make([]storage.CurrentStateRow, perOp)
						for i := range all {
							all[i] = storage.CurrentStateRow{Key: storage.StateKey{Type: "m.room.member", StateKey: fmt.Sprintf("@u%d:x", i)},
								EventID: fmt.Sprintf("$e%d-%d-%d", rows, op, i), Membership: "join"}
						}
						room := fmt.Sprintf("!r%d-%d:x", rows, op)
						op++
						err := s.Write(ctx, func(c storage.Conn) error {
							for len(all) > 0 {
								n := min(rows, len(all))
								if err := c.SetCurrentStates(ctx, room, all[:n], 1); err != nil {
									return err
								}
								all = all[n:]
							}
							return nil
						})
						if err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*perOp), "µs/row")
				})
			}
		})
	}
}
