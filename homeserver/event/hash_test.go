package event

import (
	"encoding/base64"
	"errors"
	"regexp"
	"testing"
)

// crossCheckEvent and its hashes were computed independently with Python's json module (the
// reference canonical JSON of the appendix) and hashlib, following the spec's algorithms.
const crossCheckEvent = `{"auth_events": ["$a1", "$a2"], "content": {"body": "h\u00e9 \u2028 \u0001 \"q\"", "msgtype": "m.text"}, "depth": 7, "hashes": {"sha256": "abc"}, "origin": "x.example", "origin_server_ts": 1700000000000, "prev_events": ["$p1"], "room_id": "!r:x.example", "sender": "@u:x.example", "signatures": {"x.example": {"ed25519:1": "s"}}, "type": "m.room.message", "unsigned": {"age": 3}}`

func TestHashesCrossCheck(t *testing.T) {
	h, err := ContentHash([]byte(crossCheckEvent))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := base64.RawStdEncoding.EncodeToString(h[:]), "dFN3JNBZniEIG/mvTMtFTiWHkQlh3+kVzjBz3zJBKUs"; got != want {
		t.Errorf("content hash %s, want %s", got, want)
	}
	for _, tc := range []struct {
		v    Version
		want string
	}{
		{V6, "$-ee_cKHGoO5sWZksISoikbs8FoChj8Gxn2onTkq6CO4"}, // keeps the top-level origin
		{V10, "$-ee_cKHGoO5sWZksISoikbs8FoChj8Gxn2onTkq6CO4"},
		{V11, "$jzYN5KnkRtxrPqXa3OdfP1Oh9-NfkVaZfzOWKIgmHww"}, // drops it
		{V12, "$jzYN5KnkRtxrPqXa3OdfP1Oh9-NfkVaZfzOWKIgmHww"},
	} {
		id, err := EventID(tc.v, []byte(crossCheckEvent))
		if err != nil {
			t.Fatal(err)
		}
		if id != tc.want {
			t.Errorf("v%s: event ID %s, want %s", tc.v, id, tc.want)
		}
	}
}

var eventIDFormat = regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)

func TestEventIDDeterministic(t *testing.T) {
	base := []byte(`{"type":"m.room.message","room_id":"!r:x","sender":"@u:x","content":{"body":"a"},"depth":1,"origin_server_ts":2,"prev_events":[],"auth_events":[],"hashes":{"sha256":"AAAA"},"signatures":{}}`)
	id, err := EventID(V11, base)
	if err != nil {
		t.Fatal(err)
	}
	if !eventIDFormat.MatchString(id) {
		t.Fatalf("event ID %q is not $ + 43 URL-safe base64 characters", id)
	}
	same := []string{
		// reordered, whitespace, escapes
		"{ \"signatures\" : {}, \"auth_events\":[], \"prev_events\":[], \"origin_server_ts\":2, \"depth\":1,\n\"content\":{\"body\":\"\\u0061\"}, \"sender\":\"@u:x\", \"room_id\":\"!r:x\", \"type\":\"m.room.message\", \"hashes\":{\"sha256\":\"AAAA\"}}",
		// unsigned and signatures are not covered
		`{"type":"m.room.message","room_id":"!r:x","sender":"@u:x","content":{"body":"a"},"depth":1,"origin_server_ts":2,"prev_events":[],"auth_events":[],"hashes":{"sha256":"AAAA"},"signatures":{"x":{"ed25519:1":"zzz"}},"unsigned":{"age":100}}`,
		// nor is redactable content (the content hash is, but it is unchanged here)
		`{"type":"m.room.message","room_id":"!r:x","sender":"@u:x","content":{"body":"b"},"depth":1,"origin_server_ts":2,"prev_events":[],"auth_events":[],"hashes":{"sha256":"AAAA"},"signatures":{}}`,
	}
	for _, s := range same {
		got, err := EventID(V11, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		if got != id {
			t.Errorf("EventID(%s) = %s, want %s", s, got, id)
		}
	}
	different := []string{
		`{"type":"m.room.message","room_id":"!r:x","sender":"@u:x","content":{"body":"a"},"depth":2,"origin_server_ts":2,"prev_events":[],"auth_events":[],"hashes":{"sha256":"AAAA"},"signatures":{}}`,
		`{"type":"m.room.message","room_id":"!r:x","sender":"@u:x","content":{"body":"a"},"depth":1,"origin_server_ts":2,"prev_events":[],"auth_events":[],"hashes":{"sha256":"AAAB"},"signatures":{}}`,
		`{"type":"m.room.messages","room_id":"!r:x","sender":"@u:x","content":{"body":"a"},"depth":1,"origin_server_ts":2,"prev_events":[],"auth_events":[],"hashes":{"sha256":"AAAA"},"signatures":{}}`,
	}
	for _, s := range different {
		got, err := EventID(V11, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		if got == id {
			t.Errorf("EventID(%s) equals the base event's", s)
		}
	}
}

func TestCheckContentHash(t *testing.T) {
	signed := readTestdata(t, "spec_event_minimal.signed.json")
	if err := CheckContentHash(signed); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		edit edit
		want error
	}{
		"changed content":  {edit{"content", []byte(`{"a":1}`)}, ErrContentHashMismatch},
		"no hashes":        {edit{"hashes", nil}, ErrNoContentHash},
		"no sha256":        {edit{"hashes", []byte(`{"sha512":"x"}`)}, ErrNoContentHash},
		"sha256 not b64":   {edit{"hashes", []byte(`{"sha256":"!!"}`)}, ErrNoContentHash},
		"sha256 too short": {edit{"hashes", []byte(`{"sha256":"AAAA"}`)}, ErrNoContentHash},
		"padded hash":      {edit{"hashes", []byte(`{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos="}`)}, nil},
		"unsigned ignored": {edit{"unsigned", []byte(`{"age":1}`)}, nil},
		"sigs ignored":     {edit{"signatures", []byte(`{}`)}, nil},
	} {
		ev, err := appendEdited(nil, mustCanonical(t, signed), tc.edit)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckContentHash(ev); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Errorf("%s: CheckContentHash = %v, want %v", name, err, tc.want)
		}
	}
}

func TestRoomIDFromCreateEvent(t *testing.T) {
	s := newTestServer("x.example")
	p, err := Build(V12, Proto{Sender: "@u:x.example", Type: "m.room.create", StateKey: ptr(""),
		Content: []byte(`{"room_version":"12"}`), OriginServerTS: 1, Depth: 1}, s.name, s.keyID, s.key)
	if err != nil {
		t.Fatal(err)
	}
	if p.RoomID != "" {
		t.Errorf("v12 create event has room_id %q", p.RoomID)
	}
	if _, ok := member(p.Raw, "room_id"); ok {
		t.Errorf("v12 create event JSON has a room_id: %s", p.Raw)
	}
	want := "!" + p.EventID[1:]
	if got := RoomIDFromCreateEvent(p.EventID); got != want {
		t.Errorf("RoomIDFromCreateEvent = %s, want %s", got, want)
	}
	if got := p.EffectiveRoomID(); got != want {
		t.Errorf("EffectiveRoomID = %s, want %s", got, want)
	}
	// Events in the room then use it.
	msg, err := Build(V12, Proto{RoomID: want, Sender: "@u:x.example", Type: "m.room.message", Content: []byte(`{}`),
		PrevEvents: []string{p.EventID}, Depth: 2, OriginServerTS: 2}, s.name, s.keyID, s.key)
	if err != nil {
		t.Fatal(err)
	}
	if msg.EffectiveRoomID() != want {
		t.Errorf("message room ID %s, want %s", msg.EffectiveRoomID(), want)
	}
}
