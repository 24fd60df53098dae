package room_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	gosync "sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestNoticesOfPlainSends: the notices of pipelined batches (plain sends) say which positions
// they cover and that no member event is among them; those of the serial path (creating a room,
// with its member event) do not claim it.
func TestNoticesOfPlainSends(t *testing.T) {
	s := storagetest.Open(t, "sqlite")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := bus.Start(context.Background(), bus.Options{StoreDir: t.TempDir(), Name: "room-notice-test"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	type notice struct {
		RoomID    string `json:"room_id"`
		Pos       int64  `json:"pos"`
		After     int64  `json:"after"`
		NoMembers bool   `json:"no_members"`
	}
	var mu gosync.Mutex
	var got []notice
	sub, err := b.Subscribe(bus.SubjectRoomEvents, func(data []byte) {
		var n notice
		_ = json.Unmarshal(data, &n)
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_, priv, _ := ed25519.GenerateKey(nil)
	svc := room.New(s, b, room.Options{ServerName: "test.local", Key: signing.Key{ID: "ed25519:a", Private: priv}, DefaultVersion: event.V11}, log)
	defer svc.Close()
	ctx := context.Background()
	alice := "@alice:test.local"
	roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice})
	if err != nil {
		t.Fatal(err)
	}
	var created int
	for deadline := time.Now().Add(5 * time.Second); created == 0; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		created = len(got)
		mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no notice of the room's creation")
		}
	}
	var wg gosync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := room.Sender{UserID: alice, Localpart: "alice", DeviceID: "D", TxnID: string(rune('a' + i))}
			if _, err := svc.Send(ctx, roomID, from, "m.room.message", json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		first, last := got[0], got[len(got)-1]
		mu.Unlock()
		if last.Pos >= first.Pos+20 || time.Now().After(deadline) { // the creation's last position, then 20 sends
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got[0].NoMembers {
		t.Errorf("the creation's notice claims no member event: %+v", got[0])
	}
	var quiet int
	for _, n := range got[1:] {
		if n.RoomID != roomID || !n.NoMembers || n.After >= n.Pos {
			t.Errorf("a send's notice: %+v", n)
		}
		quiet++
	}
	if quiet == 0 {
		t.Fatalf("no notice of the sends: %+v", got)
	}
}
