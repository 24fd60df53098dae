package event

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func messageProto() Proto {
	return Proto{
		RoomID: "!r:x.example", Sender: "@u:x.example", Type: "m.room.message",
		Content:    []byte(`{ "msgtype": "m.text", "body": "hello" }`),
		PrevEvents: []string{"$p1", "$p2"}, AuthEvents: []string{"$a1"},
		Depth: 12, OriginServerTS: 1700000000000,
	}
}

func TestBuild(t *testing.T) {
	s := newTestServer("x.example")
	for _, v := range Versions {
		p, err := Build(v, messageProto(), s.name, s.keyID, s.key)
		if err != nil {
			t.Fatalf("v%s: %v", v, err)
		}
		if string(p.Content) != `{"body":"hello","msgtype":"m.text"}` {
			t.Errorf("v%s: content %s not canonical", v, p.Content)
		}
		if c := mustCanonical(t, p.Raw); string(c) != string(p.Raw) {
			t.Errorf("v%s: Raw is not canonical: %s", v, p.Raw)
		}
		// What we build parses back to the same event.
		q, err := Parse(v, p.Raw)
		if err != nil {
			t.Fatalf("v%s: Parse(Build()): %v", v, err)
		}
		if q.EventID != p.EventID || q.Sender != p.Sender || q.Depth != p.Depth || string(q.Raw) != string(p.Raw) {
			t.Errorf("v%s: parsed %+v, built %+v", v, q, p)
		}
		if err := p.CheckContentHash(); err != nil {
			t.Errorf("v%s: content hash: %v", v, err)
		}
		if err := VerifyEventSignatures(context.Background(), v, p, s.addTo(keys{}).get); err != nil {
			t.Errorf("v%s: signatures: %v", v, err)
		}
		if _, ok := member(p.Raw, "event_id"); ok {
			t.Errorf("v%s: event_id in the JSON of a v4+ event", v)
		}
		// Deterministic: the same proto gives the same event.
		again, _ := Build(v, messageProto(), s.name, s.keyID, s.key)
		if again.EventID != p.EventID {
			t.Errorf("v%s: Build is not deterministic", v)
		}
	}
}

func TestBuildRedaction(t *testing.T) {
	s := newTestServer("x.example")
	proto := messageProto()
	proto.Type, proto.Content, proto.Redacts = "m.room.redaction", []byte(`{"reason":"spam"}`), "$target"
	for _, v := range Versions {
		p, err := Build(v, proto, s.name, s.keyID, s.key)
		if err != nil {
			t.Fatal(err)
		}
		_, top := member(p.Raw, "redacts")
		_, inContent := member(p.Content, "redacts")
		if top == v.RedactsInContent() || inContent != v.RedactsInContent() {
			t.Errorf("v%s: redacts at top level %v, in content %v", v, top, inContent)
		}
		if p.RedactsID() != "$target" {
			t.Errorf("v%s: RedactsID = %q", v, p.RedactsID())
		}
	}
	proto.Content = []byte(`{"redacts":"$other"}`)
	if _, err := Build(V11, proto, s.name, s.keyID, s.key); !errors.Is(err, ErrInvalid) {
		t.Errorf("conflicting content.redacts: err = %v, want ErrInvalid", err)
	}
}

func TestBuildRejects(t *testing.T) {
	s := newTestServer("x.example")
	for _, tc := range []struct {
		name  string
		v     Version
		edit  func(*Proto)
		match error
	}{
		{"float content", V11, func(p *Proto) { p.Content = []byte(`{"a":1.5}`) }, ErrBadJSON},
		{"content not an object", V11, func(p *Proto) { p.Content = []byte(`[1]`) }, ErrInvalid},
		{"no room ID", V11, func(p *Proto) { p.RoomID = "" }, ErrInvalid},
		{"v12 create with room ID", V12, func(p *Proto) { p.Type = "m.room.create"; p.StateKey = ptr("") }, ErrInvalid},
		{"no type", V11, func(p *Proto) { p.Type = "" }, ErrInvalid},
		{"bad sender", V11, func(p *Proto) { p.Sender = "u" }, ErrInvalid},
		{"negative depth", V11, func(p *Proto) { p.Depth = -1 }, ErrInvalid},
		{"depth over 2^53-1", V11, func(p *Proto) { p.Depth = 1 << 53 }, ErrInvalid},
		{"invalid UTF-8", V11, func(p *Proto) { p.StateKey = ptr("\xff") }, ErrInvalid},
		{"too large", V11, func(p *Proto) {
			p.Content = []byte(`{"b":"` + strings.Repeat("x", MaxPDUSize) + `"}`)
		}, ErrTooLarge},
	} {
		p := messageProto()
		tc.edit(&p)
		if _, err := Build(tc.v, p, s.name, s.keyID, s.key); !errors.Is(err, tc.match) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.match)
		}
	}
	if _, err := Build(V11, messageProto(), s.name, "rsa:1", s.key); err == nil {
		t.Error("non-ed25519 key ID accepted")
	}
}

// TestBuildUnsigned: an event built unsigned has the event ID and hashes of the signed one, fails
// signature checks until SignPDU, and then equals what Build makes.
func TestBuildUnsigned(t *testing.T) {
	s := newTestServer("x.example")
	for _, v := range Versions {
		signed, err := Build(v, messageProto(), s.name, s.keyID, s.key)
		if err != nil {
			t.Fatalf("v%s: %v", v, err)
		}
		p, err := BuildUnsigned(v, messageProto(), s.name, s.keyID)
		if err != nil {
			t.Fatalf("v%s: BuildUnsigned: %v", v, err)
		}
		if p.EventID != signed.EventID {
			t.Errorf("v%s: unsigned event ID %s, signed %s", v, p.EventID, signed.EventID)
		}
		if err := p.CheckContentHash(); err != nil {
			t.Errorf("v%s: content hash: %v", v, err)
		}
		if err := VerifyEventSignatures(context.Background(), v, p, s.addTo(keys{}).get); err == nil {
			t.Errorf("v%s: an unsigned event passed the signature check", v)
		}
		raw, err := SignPDU(p, s.name, s.keyID, s.key)
		if err != nil {
			t.Fatalf("v%s: SignPDU: %v", v, err)
		}
		if string(raw) != string(signed.Raw) {
			t.Errorf("v%s: SignPDU gave\n%s\nBuild gave\n%s", v, raw, signed.Raw)
		}
		q, err := Parse(v, raw)
		if err != nil || q.EventID != p.EventID {
			t.Fatalf("v%s: Parse(SignPDU()) = %v, %v", v, q, err)
		}
		if again, err := SignPDU(q, s.name, s.keyID, s.key); err != nil || string(again) != string(raw) {
			t.Errorf("v%s: signing a signed event changed it: %v", v, err)
		}
	}
}

// TestBuildUnsignedSizeLimit: the size limit counts the signature the event will carry.
func TestBuildUnsignedSizeLimit(t *testing.T) {
	s := newTestServer("x.example")
	v := Versions[len(Versions)-1]
	proto := messageProto()
	base, err := BuildUnsigned(v, proto, s.name, s.keyID)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := Build(v, proto, s.name, s.keyID, s.key)
	if err != nil {
		t.Fatal(err)
	}
	// Pad the body so that the signed event is exactly one byte over the limit.
	pad := MaxPDUSize - len(signed.Raw) + 1
	proto.Content = []byte(`{"body":"hello` + strings.Repeat("x", pad) + `","msgtype":"m.text"}`)
	if _, err := BuildUnsigned(v, proto, s.name, s.keyID); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("BuildUnsigned of an event one byte too large once signed: %v (unsigned size %d)", err, len(base.Raw)+pad)
	}
	if _, err := Build(v, proto, s.name, s.keyID, s.key); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Build of the same event: %v", err)
	}
	proto.Content = []byte(`{"body":"hello` + strings.Repeat("x", pad-1) + `","msgtype":"m.text"}`)
	if _, err := BuildUnsigned(v, proto, s.name, s.keyID); err != nil {
		t.Fatalf("BuildUnsigned of an event exactly at the limit once signed: %v", err)
	}
}
