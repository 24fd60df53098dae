package sync

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestAppendJSONMatchesMarshal: AppendJSON writes what encoding/json writes, for a response with
// every section filled, and for an empty one.
func TestAppendJSONMatchesMarshal(t *testing.T) {
	ev := func(s string) json.RawMessage { return json.RawMessage(s) }
	full := &Response{
		NextBatch: "s1_2_3_4_5_6_7",
		Rooms: Rooms{
			Join: map[string]*JoinedRoom{
				"!a:x": {
					Summary:                   &Summary{Heroes: []string{"@b:x"}, Joined: 2, Invited: 1},
					State:                     EventList{Events: []json.RawMessage{ev(`{"type":"m.room.name","content":{"name":"<x> & \"y\""}}`)}},
					Timeline:                  Timeline{Events: []json.RawMessage{ev(`{"type":"m.room.message","content":{"body":"é"}}`), ev(`{"a":1}`)}, Limited: true, PrevBatch: "s9"},
					Ephemeral:                 EventList{Events: []json.RawMessage{}},
					AccountData:               EventList{Events: []json.RawMessage{ev(`{"type":"m.tag","content":{}}`)}},
					UnreadNotifications:       Unread{NotificationCount: 3, HighlightCount: 1},
					UnreadThreadNotifications: map[string]Unread{"$t\"1": {NotificationCount: 1}},
				},
				"!b:x": {Timeline: Timeline{Events: []json.RawMessage{}}, State: EventList{Events: []json.RawMessage{}},
					Ephemeral: EventList{Events: []json.RawMessage{}}, AccountData: EventList{Events: []json.RawMessage{}}},
			},
			Invite: map[string]*InvitedRoom{"!i:x": {InviteState: EventList{Events: []json.RawMessage{ev(`{"type":"m.room.member"}`)}}}},
			Knock:  map[string]*KnockedRoom{},
			Leave: map[string]*LeftRoom{"!l:x": {State: EventList{Events: []json.RawMessage{}}, Timeline: Timeline{Events: []json.RawMessage{ev(`{}`)}},
				AccountData: EventList{Events: []json.RawMessage{}}}},
		},
		Presence:               EventList{Events: []json.RawMessage{ev(`{"type":"m.presence"}`)}},
		AccountData:            EventList{Events: []json.RawMessage{}},
		ToDevice:               &EventList{Events: []json.RawMessage{ev(`{"type":"m.room_key"}`)}},
		DeviceLists:            &DeviceLists{Changed: []string{"@c:x"}, Left: []string{}},
		OneTimeKeysCount:       map[string]int{"signed_curve25519": 5},
		UnusedFallbackKeyTypes: []string{},
	}
	empty := &Response{NextBatch: "s0", Rooms: Rooms{Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{},
		Knock: map[string]*KnockedRoom{}, Leave: map[string]*LeftRoom{}},
		Presence: EventList{Events: []json.RawMessage{}}, AccountData: EventList{Events: []json.RawMessage{}}}
	keys := &Response{NextBatch: "s1", Rooms: Rooms{Join: map[string]*JoinedRoom{}, Leave: map[string]*LeftRoom{}},
		Presence: EventList{Events: []json.RawMessage{}}, AccountData: EventList{Events: []json.RawMessage{}},
		OneTimeKeysCount:       map[string]int{"signed_curve25519": 50, "curve25519": 0, "k\"<&>": 7},
		UnusedFallbackKeyTypes: []string{"signed_curve25519", "x\"y"}}
	// As build makes them: only the maps it fills, the key counts encoded once by the cache.
	built := &Response{NextBatch: "s2", Rooms: Rooms{Join: map[string]*JoinedRoom{}},
		Presence: EventList{Events: []json.RawMessage{}}, AccountData: EventList{Events: []json.RawMessage{}},
		OneTimeKeysCount: keys.OneTimeKeysCount, countsJSON: appendCounts(nil, keys.OneTimeKeysCount)}
	if got := string(built.AppendJSON(nil)); !strings.Contains(got, `"invite":{},"knock":{},"leave":{}`) {
		t.Errorf("built: nil maps not written as {}: %s", got)
	}
	for name, r := range map[string]*Response{"full": full, "empty": empty, "keys": keys, "built": built} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got := r.AppendJSON(nil)
		if strings.ContainsRune(string(got), '\n') {
			t.Errorf("%s: newline in %s", name, got)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: AppendJSON wrote invalid JSON: %v\n%s", name, err, got)
		}
		_ = json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) || name == "keys" && string(got) != string(want) {
			t.Errorf("%s:\nAppendJSON %s\nMarshal    %s", name, got, want)
		}
	}
}

func BenchmarkResponseJSON(b *testing.B) {
	evs := make([]json.RawMessage, 20)
	for i := range evs {
		evs[i] = json.RawMessage(`{"content":{"body":"hello there, this is a message of moderate length","msgtype":"m.text"},"event_id":"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG","origin_server_ts":1700000000000,"room_id":"!room:example.org","sender":"@alice:example.org","type":"m.room.message","unsigned":{"age":12}}`)
	}
	r := &Response{NextBatch: "s1", Rooms: Rooms{Join: map[string]*JoinedRoom{"!room:example.org": {Timeline: Timeline{Events: evs},
		State: EventList{Events: []json.RawMessage{}}, Ephemeral: EventList{Events: []json.RawMessage{}}, AccountData: EventList{Events: []json.RawMessage{}}}},
		Invite: map[string]*InvitedRoom{}, Knock: map[string]*KnockedRoom{}, Leave: map[string]*LeftRoom{}},
		Presence: EventList{Events: []json.RawMessage{}}, AccountData: EventList{Events: []json.RawMessage{}}}
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(r)
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		for b.Loop() {
			_ = r.AppendJSON(nil)
		}
	})
}
