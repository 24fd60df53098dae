package event

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// BuildUnsigned writes the event once and fills the PDU from the proto. These tests hold it to
// the path it replaced, kept here as the reference: lay the event out, add hashes and signatures
// by editing the JSON (hashEvent), and parse every field back (parseCanonical).

// buildUnsignedReference is BuildUnsigned as it was before it stopped parsing what it wrote.
func buildUnsignedReference(v Version, proto Proto, serverName, keyID string) (*PDU, error) {
	b, err := proto.layout(v, nil)
	if err != nil {
		return nil, err
	}
	withHash, msg, err := hashEvent(v, b)
	if err != nil {
		return nil, err
	}
	p, err := parseCanonical(v, withHash, msg)
	if err != nil {
		return nil, err
	}
	if n := len(withHash) - len(`{}`) + signaturesSize(serverName, keyID); n > MaxPDUSize {
		return nil, fmt.Errorf("%w: %d bytes as signed canonical JSON, limit %d", ErrTooLarge, n, MaxPDUSize)
	}
	return p, nil
}

// checkBuildUnsigned builds proto both ways and fails t unless the results are the same: equal
// PDUs (every field, the unexported ones included), or errors with the same message.
func checkBuildUnsigned(t *testing.T, v Version, proto Proto) *PDU {
	t.Helper()
	const server, keyID = "x.example", "ed25519:x_example"
	want, wantErr := buildUnsignedReference(v, proto, server, keyID)
	got, err := BuildUnsigned(v, proto, server, keyID)
	if wantErr != nil || err != nil {
		if wantErr == nil || err == nil || err.Error() != wantErr.Error() {
			t.Fatalf("v%s: err = %v, want %v", v, err, wantErr)
		}
		for _, class := range []error{ErrInvalid, ErrTooLarge, ErrBadJSON} {
			if errors.Is(err, class) != errors.Is(wantErr, class) {
				t.Fatalf("v%s: err %v, want %v: not the same class", v, err, wantErr)
			}
		}
		return nil
	}
	if !bytes.Equal(got.Raw, want.Raw) {
		t.Fatalf("v%s: Raw\n%s\nwant\n%s", v, got.Raw, want.Raw)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("v%s: PDU\n%#v\nwant\n%#v", v, got, want)
	}
	// The event ID again, from the general reference hash rather than the message hashEvent made.
	if reparsed, err := parseCanonical(v, got.Raw, nil); err != nil || !reflect.DeepEqual(reparsed, got) {
		t.Fatalf("v%s: parsing Raw gives %#v, %v", v, reparsed, err)
	}
	if c, err := Canonical(got.Raw); err != nil || !bytes.Equal(c, got.Raw) {
		t.Fatalf("v%s: Raw is not canonical: %s", v, got.Raw)
	}
	if err := got.CheckContentHash(); err != nil {
		t.Fatalf("v%s: content hash: %v", v, err)
	}
	if !pointsInto(got.Content, got.Raw) {
		t.Fatalf("v%s: Content does not point into Raw", v)
	}
	return got
}

// pointsInto reports whether sub is a part of b's memory.
func pointsInto(sub, b []byte) bool {
	if len(sub) == 0 || len(b) == 0 {
		return false
	}
	for i := range b {
		if &b[i] == &sub[0] {
			return i+len(sub) <= len(b)
		}
	}
	return false
}

// eventIDs returns n event IDs of size bytes each.
func eventIDs(n, size int) []string {
	ids := make([]string, n)
	for i := range ids {
		id := fmt.Sprintf("$%d", i)
		ids[i] = id + strings.Repeat("E", size-len(id))
	}
	return ids
}

// buildUnsignedCases covers what BuildUnsigned lays out or checks differently by version, field
// or size. Each case is built in every room version.
func buildUnsignedCases() []struct {
	name string
	edit func(*Proto)
} {
	// fill pads a message's body so that the event built unsigned is size bytes long.
	fill := func(size int) func(*Proto) {
		return func(p *Proto) {
			p.Content = nil
			base, err := p.layout(V11, &marks{}) // as long as Raw will be, before checkLimits
			if err != nil {
				panic(err)
			}
			p.Content = []byte(`{"body":"` + strings.Repeat("x", size-len(base)-len(`"body":""`)) + `"}`)
		}
	}
	signedLimit := MaxPDUSize + len(`{}`) - signaturesSize("x.example", "ed25519:x_example")
	return []struct {
		name string
		edit func(*Proto)
	}{
		{"message", func(*Proto) {}},
		{"nil content", func(p *Proto) { p.Content = nil }},
		{"empty content", func(p *Proto) { p.Content = []byte{} }},
		{"{} content", func(p *Proto) { p.Content = []byte(` { } `) }},
		{"nested unsorted content", func(p *Proto) {
			p.Content = []byte(`{"z":{"b":[1,{"y":null,"x":true}],"a":-0},"m.relates_to":{"rel_type":"m.thread","event_id":"$t"},"a":""}`)
		}},
		{"unicode and escapes", func(p *Proto) {
			p.Content = []byte(`{"body":"caf\u00e9 😀 \ud83d\ude00 \u2028 \n\t\"\\\/ \u0000\u001f","\u00e9":1,"e":2}`)
		}},
		{"escapes in IDs", func(p *Proto) {
			p.RoomID, p.Sender, p.Type = "!r\"\\\n:x.example", "@u\u0001é:x.example", "m.\tweird\u2028"
			p.StateKey = ptr("\x7f\"")
			p.PrevEvents, p.AuthEvents = []string{"$\\p"}, []string{"$\x1fa"}
		}},
		{"no prev or auth events", func(p *Proto) { p.PrevEvents, p.AuthEvents = nil, []string{} }},
		{"20 prev and 10 auth events", func(p *Proto) { p.PrevEvents, p.AuthEvents = eventIDs(20, 44), eventIDs(10, 255) }},
		{"21 prev events", func(p *Proto) { p.PrevEvents = eventIDs(21, 44) }},
		{"11 auth events", func(p *Proto) { p.AuthEvents = eventIDs(11, 44) }},
		{"11 auth events, the last too long", func(p *Proto) { p.AuthEvents = append(eventIDs(10, 44), eventIDs(1, 256)...) }},
		{"prev event without $", func(p *Proto) { p.PrevEvents = []string{"$p", "p"} }},
		{"auth event of one byte", func(p *Proto) { p.AuthEvents = []string{"$"} }},
		{"IDs of 255 bytes", func(p *Proto) {
			p.RoomID, p.Sender, p.Type = "!"+strings.Repeat("r", 254), "@u:"+strings.Repeat("x", 252), strings.Repeat("t", 255)
			p.StateKey = ptr(strings.Repeat("k", 255))
		}},
		{"room_id over 255 bytes", func(p *Proto) { p.RoomID = "!" + strings.Repeat("r", 255) }},
		{"sender over 255 bytes", func(p *Proto) { p.Sender = "@u:" + strings.Repeat("x", 253) }},
		{"type over 255 bytes", func(p *Proto) { p.Type = strings.Repeat("t", 256) }},
		{"state_key over 255 bytes", func(p *Proto) { p.StateKey = ptr(strings.Repeat("k", 256)) }},
		{"room_id without !", func(p *Proto) { p.RoomID = "r:x.example" }},
		{"room_id of one byte", func(p *Proto) { p.RoomID = "!" }},
		{"room_id without ! and type too long", func(p *Proto) { p.RoomID, p.Type = "r", strings.Repeat("t", 256) }},
		{"bad content and type too long", func(p *Proto) { p.Content, p.Type = []byte(`{"a":1.5}`), strings.Repeat("t", 256) }},
		{"content an array", func(p *Proto) { p.Content = []byte(`[]`) }},
		{"content a string", func(p *Proto) { p.Content = []byte(`"{}"`) }},
		{"content only spaces", func(p *Proto) { p.Content = []byte(`  `) }},
		{"content invalid UTF-8", func(p *Proto) { p.Content = []byte("{\"a\":\"\xff\"}") }},
		{"invalid UTF-8 prev event", func(p *Proto) { p.PrevEvents = []string{"$\xff"} }},
		{"no type", func(p *Proto) { p.Type = "" }},
		{"no room_id", func(p *Proto) { p.RoomID = "" }},
		{"bad sender", func(p *Proto) { p.Sender = "@u" }},
		{"depth 0 and negative ts", func(p *Proto) { p.Depth, p.OriginServerTS = 0, -5 }},
		{"largest depth and ts", func(p *Proto) { p.Depth, p.OriginServerTS = maxSafeInt, maxSafeInt }},
		{"depth out of range", func(p *Proto) { p.Depth = maxSafeInt + 1 }},
		{"state event", func(p *Proto) {
			p.Type, p.StateKey = "m.room.member", ptr("@u:x.example")
			p.Content = []byte(`{"membership":"join","displayname":"U","join_authorised_via_users_server":"@a:y","third_party_invite":{"signed":{"s":1},"x":2}}`)
		}},
		{"empty state key", func(p *Proto) {
			p.Type, p.StateKey = "m.room.topic", ptr("")
			p.Content = []byte(`{"topic":"t"}`)
		}},
		{"third-party invite not an object", func(p *Proto) {
			p.Type, p.StateKey = "m.room.member", ptr("@v:y")
			p.Content = []byte(`{"membership":"invite","third_party_invite":[1]}`)
		}},
		{"power levels", func(p *Proto) {
			p.Type, p.StateKey = "m.room.power_levels", ptr("")
			p.Content = []byte(`{"users":{"@u:x.example":100},"invite":50,"ban":50,"notifications":{"room":50},"events":{"m.room.name":50}}`)
		}},
		{"join rules", func(p *Proto) {
			p.Type, p.StateKey = "m.room.join_rules", ptr("")
			p.Content = []byte(`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!a:b"}],"x":1}`)
		}},
		{"history visibility", func(p *Proto) {
			p.Type, p.StateKey = "m.room.history_visibility", ptr("")
			p.Content = []byte(`{"history_visibility":"shared","other":true}`)
		}},
		{"create with room_id", func(p *Proto) {
			p.Type, p.StateKey = "m.room.create", ptr("")
			p.Content = []byte(`{"creator":"@u:x.example","room_version":"11","m.federate":true}`)
			p.PrevEvents, p.AuthEvents = nil, nil
		}},
		{"create without room_id", func(p *Proto) {
			p.Type, p.StateKey, p.RoomID = "m.room.create", ptr(""), ""
			p.Content = []byte(`{"room_version":"12","additional_creators":["@v:y"]}`)
			p.PrevEvents, p.AuthEvents = nil, nil
		}},
		{"redaction", func(p *Proto) {
			p.Type, p.Redacts, p.Content = "m.room.redaction", "$target", []byte(`{"reason":"spam"}`)
		}},
		{"redaction without content", func(p *Proto) { p.Type, p.Redacts, p.Content = "m.room.redaction", "$target", nil }},
		{"redaction with redacts in content", func(p *Proto) {
			p.Type, p.Redacts, p.Content = "m.room.redaction", "$t\"é", []byte(`{"redacts":"$t\"\u00e9","reason":"r"}`)
		}},
		{"redaction with another redacts in content", func(p *Proto) {
			p.Type, p.Redacts, p.Content = "m.room.redaction", "$target", []byte(`{"redacts":"$other"}`)
		}},
		{"redaction with a number as content redacts", func(p *Proto) {
			p.Type, p.Redacts, p.Content = "m.room.redaction", "$target", []byte(`{"a":1,"redacts":7,"z":2}`)
		}},
		{"redaction with keys around redacts", func(p *Proto) {
			p.Type, p.Redacts, p.Content = "m.room.redaction", "$target", []byte(`{"z":{"redacts":1},"a":[],"reason":"x","s":""}`)
		}},
		{"redacts without $", func(p *Proto) { p.Type, p.Redacts = "m.room.redaction", "target" }},
		{"redacts over 255 bytes", func(p *Proto) { p.Type, p.Redacts = "m.room.redaction", "$"+strings.Repeat("r", 255) }},
		{"redacts on a message", func(p *Proto) { p.Redacts = "$target" }},
		{"at the size limit once signed", fill(signedLimit)},
		{"a byte over the size limit once signed", fill(signedLimit + 1)},
		{"at the size limit unsigned", fill(MaxPDUSize)},
		{"a byte over the size limit unsigned", fill(MaxPDUSize + 1)},
		{"over the size limit with a bad prev event", func(p *Proto) {
			p.PrevEvents = []string{"p"}
			fill(MaxPDUSize + 1)(p)
		}},
		{"too large content", func(p *Proto) {
			p.Content = []byte(`{"b":"` + strings.Repeat("x", MaxPDUSize) + `"}`)
		}},
		{"the benchmark's message", func(p *Proto) {
			p.Content = []byte(`{"msgtype":"m.text","body":"Hello everyone! Is the meeting still at 3pm? Let me know — I'll bring the slides.","m.mentions":{}}`)
		}},
	}
}

// TestBuildUnsignedEquivalent: BuildUnsigned gives exactly what the reference path gives, in every
// room version, for events that build and for events that fail.
func TestBuildUnsignedEquivalent(t *testing.T) {
	for _, tc := range buildUnsignedCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range append([]Version{{}}, Versions...) {
				proto := messageProto()
				tc.edit(&proto)
				checkBuildUnsigned(t, v, proto)
			}
		})
	}
}

// TestBuildUnsignedOwnsItsFields: the PDU shares no memory with the proto, as parseCanonical's
// never did, and its lists are separate.
func TestBuildUnsignedOwnsItsFields(t *testing.T) {
	proto := messageProto()
	proto.Type, proto.StateKey = "m.room.member", ptr("@u:x.example")
	proto.Content = []byte(`{"membership":"join"}`)
	p := checkBuildUnsigned(t, V11, proto)
	proto.PrevEvents[0], proto.AuthEvents[0], *proto.StateKey, proto.Content[2] = "$changed", "$changed", "changed", 'X'
	if p.PrevEvents[0] != "$p1" || p.AuthEvents[0] != "$a1" || *p.StateKey != "@u:x.example" ||
		string(p.Content) != `{"membership":"join"}` {
		t.Errorf("the PDU changed with the proto: %+v", p)
	}
	prev := append(p.PrevEvents, "$appended")
	if p.AuthEvents[0] != "$a1" || prev[len(prev)-1] != "$appended" {
		t.Errorf("appending to PrevEvents changed AuthEvents to %q", p.AuthEvents)
	}
}

// FuzzBuildUnsigned: for any proto, BuildUnsigned and the reference path agree.
func FuzzBuildUnsigned(f *testing.F) {
	join := func(ids []string) string { return strings.Join(ids, ",") }
	for _, tc := range buildUnsignedCases() {
		p := messageProto()
		tc.edit(&p)
		if len(p.Content) > 4096 {
			continue // the size limit cases: too big for a useful seed
		}
		sk := ""
		if p.StateKey != nil {
			sk = *p.StateKey
		}
		f.Add(uint8(5), p.RoomID, p.Sender, p.Type, sk, p.StateKey != nil, []byte(p.Content),
			join(p.PrevEvents), join(p.AuthEvents), p.Depth, p.OriginServerTS, p.Redacts)
	}
	f.Fuzz(func(t *testing.T, version uint8, roomID, sender, typ, stateKey string, isState bool, content []byte,
		prev, auth string, depth, ts int64, redacts string) {
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, ",")
		}
		proto := Proto{RoomID: roomID, Sender: sender, Type: typ, Content: content, PrevEvents: split(prev),
			AuthEvents: split(auth), Depth: depth, OriginServerTS: ts, Redacts: redacts}
		if isState {
			proto.StateKey = &stateKey
		}
		v := Version{}
		if i := int(version) % (len(Versions) + 1); i < len(Versions) {
			v = Versions[i]
		}
		checkBuildUnsigned(t, v, proto)
	})
}
