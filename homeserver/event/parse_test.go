package event

import (
	"errors"
	"strings"
	"testing"
)

// validEvent is a minimal valid v11 PDU as a map of top-level key -> raw JSON, so tests can
// change one field at a time.
func validEvent() map[string]string {
	return map[string]string{
		"auth_events":      `["$a"]`,
		"content":          `{"body":"hi"}`,
		"depth":            `3`,
		"hashes":           `{"sha256":"AAAA"}`,
		"origin_server_ts": `1000`,
		"prev_events":      `["$p"]`,
		"room_id":          `"!r:x.example"`,
		"sender":           `"@u:x.example"`,
		"signatures":       `{"x.example":{"ed25519:1":"sig"}}`,
		"type":             `"m.room.message"`,
	}
}

func eventJSON(fields map[string]string) []byte {
	var b strings.Builder
	b.WriteString("{")
	first := true
	for k, v := range fields {
		if !first {
			b.WriteString(",")
		}
		first = false
		b.WriteString(`"` + k + `":` + v)
	}
	b.WriteString("}")
	return []byte(b.String())
}

func TestParse(t *testing.T) {
	in := eventJSON(validEvent())
	p, err := Parse(V11, in)
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != V11 || p.Sender != "@u:x.example" || p.Type != "m.room.message" || p.RoomID != "!r:x.example" ||
		p.Depth != 3 || p.OriginServerTS != 1000 || string(p.Content) != `{"body":"hi"}` ||
		len(p.PrevEvents) != 1 || p.PrevEvents[0] != "$p" || len(p.AuthEvents) != 1 || p.AuthEvents[0] != "$a" ||
		p.Hashes["sha256"] != "AAAA" || p.Signatures["x.example"]["ed25519:1"] != "sig" || p.StateKey != nil || p.IsState() {
		t.Errorf("fields not parsed: %+v", p)
	}
	if want := mustCanonical(t, in); string(p.Raw) != string(want) {
		t.Errorf("Raw = %s, want canonical %s", p.Raw, want)
	}
	id, _ := EventID(V11, in)
	if p.EventID != id {
		t.Errorf("EventID = %s, want %s", p.EventID, id)
	}

	f := validEvent()
	f["state_key"] = `""`
	f["unsigned"] = `{"age":5}`
	f["redacts"] = `"$x"`
	p, err = Parse(V11, eventJSON(f))
	if err != nil {
		t.Fatal(err)
	}
	if p.StateKey == nil || *p.StateKey != "" || !p.IsState() || string(p.Unsigned) != `{"age":5}` {
		t.Errorf("state_key/unsigned not parsed: %+v", p)
	}
	if p.Redacts != "" {
		t.Errorf("v11: top-level redacts parsed as %q; it only counts before v11", p.Redacts)
	}
}

func TestParseRejects(t *testing.T) {
	long := func(sigil string, n int) string { return `"` + sigil + strings.Repeat("a", n-len(sigil)) + `"` }
	for _, tc := range []struct {
		name  string
		v     Version
		set   map[string]string // raw JSON; "" deletes the key
		match error
	}{
		{"float depth", V11, map[string]string{"depth": "3.0"}, ErrBadJSON},
		{"float in content", V11, map[string]string{"content": `{"n":0.5}`}, ErrBadJSON},
		{"exponent", V11, map[string]string{"origin_server_ts": "1e3"}, ErrBadJSON},
		{"int out of range", V11, map[string]string{"content": `{"n":9007199254740992}`}, ErrBadJSON},
		{"duplicate key in content", V11, map[string]string{"content": `{"a":1,"a":1}`}, ErrBadJSON},
		{"missing sender", V11, map[string]string{"sender": ""}, ErrInvalid},
		{"missing type", V11, map[string]string{"type": ""}, ErrInvalid},
		{"missing content", V11, map[string]string{"content": ""}, ErrInvalid},
		{"missing depth", V11, map[string]string{"depth": ""}, ErrInvalid},
		{"missing origin_server_ts", V11, map[string]string{"origin_server_ts": ""}, ErrInvalid},
		{"missing hashes", V11, map[string]string{"hashes": ""}, ErrInvalid},
		{"missing signatures", V11, map[string]string{"signatures": ""}, ErrInvalid},
		{"missing prev_events", V11, map[string]string{"prev_events": ""}, ErrInvalid},
		{"missing auth_events", V11, map[string]string{"auth_events": ""}, ErrInvalid},
		{"missing room_id v11", V11, map[string]string{"room_id": ""}, ErrInvalid},
		{"missing room_id v12 non-create", V12, map[string]string{"room_id": ""}, ErrInvalid},
		{"sender not a string", V11, map[string]string{"sender": `1`}, ErrInvalid},
		{"sender not a user ID", V11, map[string]string{"sender": `"alice"`}, ErrInvalid},
		{"sender without server", V11, map[string]string{"sender": `"@alice"`}, ErrInvalid},
		{"type not a string", V11, map[string]string{"type": `["m"]`}, ErrInvalid},
		{"state_key not a string", V11, map[string]string{"state_key": `null`}, ErrInvalid},
		{"room_id not a room ID", V11, map[string]string{"room_id": `"r:x"`}, ErrInvalid},
		{"content an array", V11, map[string]string{"content": `[]`}, ErrInvalid},
		{"content a string", V11, map[string]string{"content": `"x"`}, ErrInvalid},
		{"depth a string", V11, map[string]string{"depth": `"3"`}, ErrInvalid},
		{"depth negative", V11, map[string]string{"depth": `-1`}, ErrInvalid},
		{"ts a string", V11, map[string]string{"origin_server_ts": `"1"`}, ErrInvalid},
		{"prev_events an object", V11, map[string]string{"prev_events": `{}`}, ErrInvalid},
		{"prev_events of numbers", V11, map[string]string{"prev_events": `[1]`}, ErrInvalid},
		{"prev_events not event IDs", V11, map[string]string{"prev_events": `["p"]`}, ErrInvalid},
		{"too many prev_events", V11, map[string]string{"prev_events": `[` + strings.Repeat(`"$p",`, 20) + `"$p"]`}, ErrInvalid},
		{"too many auth_events", V11, map[string]string{"auth_events": `[` + strings.Repeat(`"$a",`, 10) + `"$a"]`}, ErrInvalid},
		{"hashes not an object", V11, map[string]string{"hashes": `"x"`}, ErrInvalid},
		{"hashes without sha256", V11, map[string]string{"hashes": `{}`}, ErrInvalid},
		{"sha256 not a string", V11, map[string]string{"hashes": `{"sha256":1}`}, ErrInvalid},
		{"signatures not an object", V11, map[string]string{"signatures": `[]`}, ErrInvalid},
		{"signatures of strings", V11, map[string]string{"signatures": `{"x":"y"}`}, ErrInvalid},
		{"signature not a string", V11, map[string]string{"signatures": `{"x":{"ed25519:1":1}}`}, ErrInvalid},
		{"unsigned not an object", V11, map[string]string{"unsigned": `1`}, ErrInvalid},
		{"redacts not a string before v11", V10, map[string]string{"redacts": `1`}, ErrInvalid},
		{"sender over 255 bytes", V11, map[string]string{"sender": `"@` + strings.Repeat("a", 250) + `:x.example"`}, ErrTooLarge},
		{"room_id over 255 bytes", V11, map[string]string{"room_id": long("!", 256)}, ErrTooLarge},
		{"type over 255 bytes", V11, map[string]string{"type": long("", 256)}, ErrTooLarge},
		{"state_key over 255 bytes", V11, map[string]string{"state_key": long("", 256)}, ErrTooLarge},
		{"event_id over 255 bytes", V11, map[string]string{"event_id": long("$", 256)}, ErrTooLarge},
		{"over 64 KiB", V11, map[string]string{"content": `{"body":"` + strings.Repeat("x", MaxPDUSize) + `"}`}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := validEvent()
			for k, v := range tc.set {
				if v == "" {
					delete(f, k)
				} else {
					f[k] = v
				}
			}
			p, err := Parse(tc.v, eventJSON(f))
			if err == nil {
				t.Fatalf("Parse accepted it: %s", p.Raw)
			}
			if !errors.Is(err, tc.match) {
				t.Fatalf("error %v does not match %v", err, tc.match)
			}
		})
	}
	for _, in := range []string{`[]`, `"x"`, `null`, `{}`, ``, `{"a":1}x`} {
		if _, err := Parse(V11, []byte(in)); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
	if _, err := Parse(Version{}, eventJSON(validEvent())); err == nil {
		t.Error("Parse with the zero Version succeeded")
	}
}

func TestParseFieldLimitsInclusive(t *testing.T) {
	f := validEvent()
	f["type"] = `"` + strings.Repeat("t", 255) + `"`
	f["state_key"] = `"` + strings.Repeat("s", 255) + `"`
	f["room_id"] = `"!` + strings.Repeat("r", 254) + `"`
	f["sender"] = `"@` + strings.Repeat("a", 252) + `:x"`
	if _, err := Parse(V11, eventJSON(f)); err != nil {
		t.Fatalf("255-byte fields rejected: %v", err)
	}
}

// The size limit applies to the canonical form: exactly MaxPDUSize passes, one byte more fails,
// and insignificant whitespace does not count.
func TestParseSizeLimit(t *testing.T) {
	f := validEvent()
	f["content"] = `{"body":""}`
	base := len(mustCanonical(t, eventJSON(f)))
	f["content"] = `{"body":"` + strings.Repeat("x", MaxPDUSize-base) + `"}`
	exact := eventJSON(f)
	if n := len(mustCanonical(t, exact)); n != MaxPDUSize {
		t.Fatalf("test setup: canonical size %d, want %d", n, MaxPDUSize)
	}
	if _, err := Parse(V11, exact); err != nil {
		t.Errorf("event of exactly %d bytes rejected: %v", MaxPDUSize, err)
	}
	padded := append([]byte(strings.Repeat(" ", 1000)), exact...)
	if _, err := Parse(V11, padded); err != nil {
		t.Errorf("whitespace counted towards the limit: %v", err)
	}
	f["content"] = `{"body":"` + strings.Repeat("x", MaxPDUSize-base+1) + `"}`
	if _, err := Parse(V11, eventJSON(f)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("event of %d bytes: err = %v, want ErrTooLarge", MaxPDUSize+1, err)
	}
}

func TestParseVersionDifferences(t *testing.T) {
	// v12 m.room.create has no room_id.
	f := validEvent()
	delete(f, "room_id")
	f["type"], f["state_key"], f["content"] = `"m.room.create"`, `""`, `{"room_version":"12"}`
	p, err := Parse(V12, eventJSON(f))
	if err != nil {
		t.Fatalf("v12 create without room_id: %v", err)
	}
	if p.RoomID != "" || p.EffectiveRoomID() != "!"+p.EventID[1:] {
		t.Errorf("v12 create: RoomID %q, EffectiveRoomID %q", p.RoomID, p.EffectiveRoomID())
	}
	if _, err := Parse(V11, eventJSON(f)); !errors.Is(err, ErrInvalid) {
		t.Errorf("v11 create without room_id: err = %v, want ErrInvalid", err)
	}

	// Redaction target: top level before v11, content from v11.
	f = validEvent()
	f["type"], f["redacts"], f["content"] = `"m.room.redaction"`, `"$top"`, `{"redacts":"$inner"}`
	p10, err := Parse(V10, eventJSON(f))
	if err != nil {
		t.Fatal(err)
	}
	p11, err := Parse(V11, eventJSON(f))
	if err != nil {
		t.Fatal(err)
	}
	if p10.RedactsID() != "$top" || p11.RedactsID() != "$inner" {
		t.Errorf("RedactsID: v10 %q (want $top), v11 %q (want $inner)", p10.RedactsID(), p11.RedactsID())
	}
}
