package event

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func FuzzCanonical(f *testing.F) {
	for _, tc := range specCanonicalExamples {
		f.Add([]byte(tc.in))
	}
	for _, s := range []string{
		`{"a": -0, "b": 1e10}`, `"\ud83d\ude00\u0000\/"`, `{"b":1,"a":{"d":[1,2,{"z":null,"y":true}],"c":""}}`,
		`[9007199254740991,-9007199254740991]`, `{"\u00e9":1,"e":2,"\n":3}`, "\"\xed\xa0\x80\"", `[[[[[]]]]]`,
		crossCheckEvent,
	} {
		f.Add([]byte(s))
	}
	f.Add(typicalEvent())
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Canonical(data)
		if err != nil {
			if !errors.Is(err, ErrBadJSON) {
				t.Fatalf("error %v does not match ErrBadJSON", err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if !json.Valid(out) {
			t.Fatalf("output is not valid JSON: %q -> %q", data, out)
		}
		again, err := Canonical(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", data, out, again, err)
		}
		if len(out) > len(data) {
			t.Fatalf("output longer than input: %q -> %q", data, out)
		}
		if !sameJSON(t, data, out) {
			t.Fatalf("decodes differently: %q -> %q", data, out)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add(readTestdata(f, "spec_event_minimal.signed.json"))
	f.Add(readTestdata(f, "spec_event_redactable.signed.json"))
	f.Add(typicalEvent())
	f.Add([]byte(crossCheckEvent))
	f.Add(eventJSON(validEvent()))
	s := newTestServer("x.example")
	for _, v := range []Version{V10, V11, V12} {
		p, err := Build(v, messageProto(), s.name, s.keyID, s.key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(p.Raw))
	}
	getKey := s.addTo(keys{}).get
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []Version{V6, V9, V11, V12} {
			p, err := Parse(v, data)
			if err != nil {
				if !errors.Is(err, ErrBadJSON) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("v%s: unclassified error %v", v, err)
				}
				continue
			}
			if !eventIDFormat.MatchString(p.EventID) {
				t.Fatalf("v%s: event ID %q", v, p.EventID)
			}
			if c, err := Canonical(p.Raw); err != nil || !bytes.Equal(c, p.Raw) {
				t.Fatalf("v%s: Raw not canonical", v)
			}
			if cj := p.ClientJSON(json.RawMessage(`{"age":1}`)); !json.Valid(cj) {
				t.Fatalf("v%s: invalid client JSON %q", v, cj)
			}
			_ = p.CheckContentHash()
			_ = VerifyEventSignatures(context.Background(), v, p, getKey)
			red, err := p.Redacted()
			if err != nil {
				t.Fatalf("v%s: Redacted: %v", v, err)
			}
			if red.EventID != p.EventID {
				t.Fatalf("v%s: redaction changed the event ID", v)
			}
			if strings.Contains(string(red.Raw), `"unsigned"`) && bytes.Contains(red.Raw, []byte(`,"unsigned":`)) {
				t.Fatalf("v%s: redacted event kept unsigned", v)
			}
		}
	})
}
