package event

import (
	"encoding/json"
	"testing"
)

func TestClientJSON(t *testing.T) {
	s := newTestServer("x.example")
	proto := messageProto()
	proto.StateKey = ptr("k")
	p, err := Build(V11, proto, s.name, s.keyID, s.key)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"content":{"body":"hello","msgtype":"m.text"},"event_id":"` + p.EventID +
		`","origin_server_ts":1700000000000,"room_id":"!r:x.example","sender":"@u:x.example","state_key":"k","type":"m.room.message"}`
	if got := p.ClientJSON(nil); string(got) != want {
		t.Errorf("ClientJSON(nil)\n got %s\nwant %s", got, want)
	}
	unsigned := json.RawMessage(`{"age":12,"transaction_id":"t1"}`)
	withUnsigned := p.ClientJSON(unsigned)
	wantU := want[:len(want)-1] + `,"unsigned":{"age":12,"transaction_id":"t1"}}`
	if string(withUnsigned) != wantU {
		t.Errorf("ClientJSON(unsigned)\n got %s\nwant %s", withUnsigned, wantU)
	}
	if c := mustCanonical(t, withUnsigned); string(c) != string(withUnsigned) {
		t.Errorf("client JSON is not canonical: %s", withUnsigned)
	}
	// The stored form plus a splice gives the same bytes.
	if got := SpliceUnsigned(nil, p.ClientJSON(nil), unsigned); string(got) != wantU {
		t.Errorf("SpliceUnsigned\n got %s\nwant %s", got, wantU)
	}
	if got := SpliceUnsigned([]byte("["), p.ClientJSON(nil), nil); string(got) != "["+want {
		t.Errorf("SpliceUnsigned without unsigned: %s", got)
	}
	var decoded map[string]any
	if err := json.Unmarshal(withUnsigned, &decoded); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"hashes", "signatures", "auth_events", "prev_events", "depth"} {
		if _, ok := decoded[k]; ok {
			t.Errorf("client event has federation key %q", k)
		}
	}
}

func TestClientJSONVersionSpecifics(t *testing.T) {
	s := newTestServer("x.example")
	create, err := Build(V12, Proto{Sender: "@u:x.example", Type: "m.room.create", StateKey: ptr(""),
		Content: []byte(`{"room_version":"12"}`), Depth: 1, OriginServerTS: 1}, s.name, s.keyID, s.key)
	if err != nil {
		t.Fatal(err)
	}
	var ev struct {
		RoomID  string         `json:"room_id"`
		Redacts string         `json:"redacts"`
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal(create.ClientJSON(nil), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.RoomID != RoomIDFromCreateEvent(create.EventID) {
		t.Errorf("v12 create: client room_id %q, want %q", ev.RoomID, RoomIDFromCreateEvent(create.EventID))
	}

	// Redactions carry redacts in both places for clients.
	proto := messageProto()
	proto.Type, proto.Content, proto.Redacts = "m.room.redaction", []byte(`{"reason":"r"}`), "$target"
	for _, v := range []Version{V10, V11} {
		p, err := Build(v, proto, s.name, s.keyID, s.key)
		if err != nil {
			t.Fatal(err)
		}
		out := p.ClientJSON(nil)
		ev.Redacts, ev.Content = "", nil
		if err := json.Unmarshal(out, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Redacts != "$target" || ev.Content["redacts"] != "$target" || ev.Content["reason"] != "r" {
			t.Errorf("v%s: redaction client event %s", v, out)
		}
		if c := mustCanonical(t, out); string(c) != string(out) {
			t.Errorf("v%s: not canonical: %s", v, out)
		}
	}
}
