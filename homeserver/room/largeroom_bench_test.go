package room_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// BenchmarkLargeRoomEvent measures one event sent into a room, one at a time, by room size (the
// room's members, all joined through the service beforehand): a plain message (a deferred job),
// a reaction (a job that may change state, so it works on a copy of the room's state) and a
// state event (a topic). A cost that grows with the room shows as a gap between the sizes.
//
//	go test ./homeserver/room -run '^$' -bench LargeRoomEvent -benchtime 200x
func BenchmarkLargeRoomEvent(b *testing.B) {
	for _, backend := range storagetest.Backends {
		for _, members := range []int{10, 5000} {
			b.Run(fmt.Sprintf("%s/members=%d", backend, members), func(b *testing.B) {
				svc := concurrentService(b, storagetest.Open(b, backend))
				ctx := context.Background()
				alice := "@alice:test.local"
				roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice, Preset: room.PresetPublicChat})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				servertest.JoinMembers(b, svc, roomID, "test.local", members)
				b.Logf("%d members joined in %v", members, time.Since(start).Round(time.Millisecond))
				target, err := svc.Send(ctx, roomID, senderOf(alice, "target"), "m.room.message", json.RawMessage(`{"msgtype":"m.text","body":"x"}`))
				if err != nil {
					b.Fatal(err)
				}
				kinds := []struct {
					name string
					send func(i int) error
				}{
					{"message", func(i int) error {
						_, err := svc.Send(ctx, roomID, senderOf(alice, fmt.Sprint("m", i)), "m.room.message",
							json.RawMessage(`{"msgtype":"m.text","body":"hello"}`))
						return err
					}},
					{"reaction", func(i int) error {
						_, err := svc.Send(ctx, roomID, senderOf(alice, fmt.Sprint("r", i)), "m.reaction",
							json.RawMessage(fmt.Sprintf(`{"m.relates_to":{"rel_type":"m.annotation","event_id":%q,"key":"%d"}}`, target, i)))
						return err
					}},
					{"state", func(i int) error {
						_, err := svc.SetState(ctx, roomID, senderOf(alice, ""), "m.room.topic", "",
							json.RawMessage(fmt.Sprintf(`{"topic":"topic %d"}`, i)))
						return err
					}},
				}
				for _, k := range kinds {
					b.Run(k.name, func(b *testing.B) {
						b.ReportAllocs()
						i := 0
						for b.Loop() {
							if err := k.send(i); err != nil {
								b.Fatal(err)
							}
							i++
						}
					})
				}
			})
		}
	}
}
