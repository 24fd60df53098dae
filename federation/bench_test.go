package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// BenchmarkInboundSend measures PUT /send/{txnId} on hs1 with transactions of 50 PDUs (messages of
// bob@hs2, each following the previous one, so none needs fetching): over TLS, X-Matrix checked,
// every event's signature verified, hashed, authorised and stored, in a two-server setup. The
// events are built and signed before the clock starts.
//
//	go test ./federation -run '^$' -bench InboundSend -benchtime 200x
func BenchmarkInboundSend(b *testing.B) {
	for _, backend := range storagetest.Backends {
		b.Run(backend, func(b *testing.B) {
			sr := newSharedRoom(b, backend, "")
			ctx := context.Background()
			first := sr.forge(b, sr.bob.UserID, "m.room.message", nil, msg("first"), nil, nil)
			if res := sr.sendAs(b, "warm-up", first.Raw); res[first.EventID].Error != "" {
				b.Fatalf("warm-up: %+v", res)
			}
			v, _ := sr.hs1.Rooms.RoomVersion(ctx, sr.roomID)
			const perTxn = 50
			txns := make([][]json.RawMessage, b.N)
			prev, depth := first.EventID, first.Depth
			for i := range txns {
				for j := 0; j < perTxn; j++ {
					content, _ := json.Marshal(msg(fmt.Sprintf("message %d.%d", i, j)))
					p, err := event.Build(v, event.Proto{RoomID: sr.roomID, Sender: sr.bob.UserID, Type: "m.room.message", Content: content,
						PrevEvents: []string{prev}, AuthEvents: first.AuthEvents, Depth: depth + 1, OriginServerTS: time.Now().UnixMilli()},
						sr.name2, sr.hs2.Key.ID, sr.hs2.Key.Private)
					if err != nil {
						b.Fatal(err)
					}
					txns[i] = append(txns[i], p.Raw)
					prev, depth = p.EventID, p.Depth
				}
			}
			b.ResetTimer()
			start := time.Now()
			for i, pdus := range txns {
				res := sr.sendAs(b, fmt.Sprintf("bench-%d", i), pdus...)
				if len(res) != perTxn {
					b.Fatalf("txn %d: %d results", i, len(res))
				}
				for id, r := range res {
					if r.Error != "" {
						b.Fatalf("txn %d: %s: %s", i, id, r.Error)
					}
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "txn/s")
			b.ReportMetric(float64(b.N*perTxn)/el.Seconds(), "pdu/s")
			for id, r := range sr.sendAs(b, "check", txns[len(txns)-1][perTxn-1]) {
				if r.Error != "" {
					b.Fatalf("last event %s: %s", id, r.Error)
				}
			}
		})
	}
}
