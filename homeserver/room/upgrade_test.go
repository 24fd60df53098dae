package room_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// stateContent reads one current state event's content straight from storage.
func stateContent(t *testing.T, s *storage.Store, roomID, typ, key string) map[string]any {
	t.Helper()
	ctx := context.Background()
	id, err := s.Read().CurrentStateEvent(ctx, roomID, typ, key)
	if err != nil {
		t.Fatalf("%s %s/%s: %v", roomID, typ, key, err)
	}
	e, err := s.Read().Event(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var ev struct {
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal(e.ClientJSON, &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Content
}

// TestUpgradePowerLevels upgrades a v6 room whose power levels are strings to v10, which only takes
// integers, then to v12 (privileged creators) and back to v11.
func TestUpgradePowerLevels(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc := newService(t, s, event.V6)
		alice, bob := "@alice:test.local", "@bob:test.local"
		v6, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice, Preset: room.PresetPublicChat,
			PowerLevelContentOverride: json.RawMessage(`{"ban":"60","users":{"@alice:test.local":"100","@bob:test.local":"40"},"events":{"m.room.tombstone":"90"}}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Membership(ctx, v6, sender(bob), bob, room.MembershipJoin, "", room.MemberProfile{}, false); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.UpgradeRoom(ctx, room.UpgradeRequest{RoomID: v6, NewVersion: "10", User: bob}); !errors.Is(err, spec.ErrForbidden) {
			t.Fatalf("bob's upgrade (40 < 90): %v", err)
		}
		v10, err := svc.UpgradeRoom(ctx, room.UpgradeRequest{RoomID: v6, NewVersion: "10", User: alice})
		if err != nil {
			t.Fatal(err)
		}
		pl := stateContent(t, s, v10, "m.room.power_levels", "")
		users := pl["users"].(map[string]any)
		if pl["ban"] != 60.0 || users[alice] != 100.0 || users[bob] != 40.0 || pl["events"].(map[string]any)["m.room.tombstone"] != 90.0 {
			t.Fatalf("v10 power levels: %v", pl)
		}
		old := stateContent(t, s, v6, "m.room.power_levels", "")
		if old["events_default"] != 50.0 || old["invite"] != 50.0 {
			t.Fatalf("v6 power levels after upgrade: %v", old)
		}

		v12, err := svc.UpgradeRoom(ctx, room.UpgradeRequest{RoomID: v10, NewVersion: "12", User: alice})
		if err != nil {
			t.Fatal(err)
		}
		users = stateContent(t, s, v12, "m.room.power_levels", "")["users"].(map[string]any)
		if _, ok := users[alice]; ok || users[bob] != 40.0 {
			t.Fatalf("v12 users: %v", users)
		}
		// Back to a version without privileged creators: alice keeps the top level explicitly.
		v11, err := svc.UpgradeRoom(ctx, room.UpgradeRequest{RoomID: v12, NewVersion: "11", User: alice})
		if err != nil {
			t.Fatal(err)
		}
		users = stateContent(t, s, v11, "m.room.power_levels", "")["users"].(map[string]any)
		if users[alice] != 100.0 || users[bob] != 40.0 {
			t.Fatalf("v11 users: %v", users)
		}
		if c := stateContent(t, s, v11, "m.room.create", ""); c["creator"] != nil || c["predecessor"].(map[string]any)["room_id"] != v12 {
			t.Fatalf("v11 create: %v", c)
		}
	})
}

// TestUpgradeSpace upgrades a space: the type and the children move with it.
func TestUpgradeSpace(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc := newService(t, s, event.V11)
		alice := "@alice:test.local"
		space, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice, Preset: room.PresetPublicChat,
			CreationContent: json.RawMessage(`{"type":"m.space","m.federate":false}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.SetState(ctx, space, sender(alice), room.TypeSpaceChild, "!child:test.local",
			json.RawMessage(`{"via":["test.local"],"suggested":true}`)); err != nil {
			t.Fatal(err)
		}
		next, err := svc.UpgradeRoom(ctx, room.UpgradeRequest{RoomID: space, NewVersion: "11", User: alice})
		if err != nil {
			t.Fatal(err)
		}
		c := stateContent(t, s, next, "m.room.create", "")
		if c["type"] != "m.space" || c["m.federate"] != false {
			t.Fatalf("create of the upgraded space: %v", c)
		}
		if child := stateContent(t, s, next, room.TypeSpaceChild, "!child:test.local"); child["suggested"] != true {
			t.Fatalf("space child: %v", child)
		}
	})
}

func TestParseAlias(t *testing.T) {
	for alias, ok := range map[string]bool{
		"#room:example.org": true, "#room:example.org:8448": true, "#ünï:example.org": true, "#a:[::1]": true,
		"room:example.org": false, "#:example.org": false, "#room": false, "#ro om:example.org": false,
		"#room:bad_server!": false, "#a#b:example.org": false, "#room:": false,
	} {
		if _, _, err := room.ParseAlias(alias); (err == nil) != ok {
			t.Errorf("ParseAlias(%q): %v, want ok=%v", alias, err, ok)
		}
	}
}
