package event

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// prettyEvent is typicalEvent, indented, with its keys in reverse order: the worst case for the
// canonicaliser (every object needs sorting).
func prettyEvent(b *testing.B) []byte {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(typicalEvent()))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteString("{\n")
	keys := []string{"unsigned", "type", "signatures", "sender", "room_id", "prev_events", "origin_server_ts",
		"hashes", "depth", "content", "auth_events"}
	for i, k := range keys {
		v, _ := json.MarshalIndent(m[k], "  ", "  ")
		buf.WriteString(`  "` + k + `": `)
		buf.Write(v)
		if i < len(keys)-1 {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
	}
	buf.WriteString("}")
	return buf.Bytes()
}

func BenchmarkCanonical(b *testing.B) {
	canon := mustCanonical(b, typicalEvent())
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"canonical-input", canon},
		{"pretty-unsorted-input", prettyEvent(b)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Canonical(bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// For comparison: the naive way (decode into interfaces, re-encode with sorted map keys),
	// which does not even implement the number and escaping rules.
	b.Run("baseline-encoding-json-roundtrip", func(b *testing.B) {
		in := prettyEvent(b)
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		for b.Loop() {
			var v any
			d := json.NewDecoder(bytes.NewReader(in))
			d.UseNumber()
			if err := d.Decode(&v); err != nil {
				b.Fatal(err)
			}
			var out bytes.Buffer
			e := json.NewEncoder(&out)
			e.SetEscapeHTML(false)
			if err := e.Encode(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkHashes(b *testing.B) {
	ev := mustCanonical(b, typicalEvent())
	b.Run("content-hash", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := contentHash(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference-hash", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := referenceHash(V11, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Redact(V11, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkBuildSign(b *testing.B) {
	s := newTestServer("x.example")
	proto := messageProto()
	proto.Content = []byte(`{"msgtype":"m.text","body":"Hello everyone! Is the meeting still at 3pm? Let me know — I'll bring the slides.","m.mentions":{}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(V11, proto, s.name, s.keyID, s.key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildUnsigned is what a local send costs in this package (timeline events are signed
// only when they leave the server).
func BenchmarkBuildUnsigned(b *testing.B) {
	s := newTestServer("x.example")
	proto := messageProto()
	proto.Content = []byte(`{"msgtype":"m.text","body":"Hello everyone! Is the meeting still at 3pm? Let me know — I'll bring the slides.","m.mentions":{}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildUnsigned(V11, proto, s.name, s.keyID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	s := newTestServer("x.example")
	p, err := Build(V11, Proto{RoomID: "!OGEhHVWSdvArJzumhm:matrix.org", Sender: "@alice:x.example", Type: "m.room.message",
		Content:    mustCanonical(b, []byte(`{"msgtype":"m.text","body":"Hello everyone! Is the meeting still at 3pm? 😀 Let me know — I'll bring the slides.","format":"org.matrix.custom.html","formatted_body":"<p>Hello everyone! Is the meeting still at <b>3pm</b>? 😀</p>","m.mentions":{"user_ids":["@bob:example.com"]}}`)),
		PrevEvents: []string{"$Aq7VSYE3fLk5gqS2MqUiJFXj1D2GSM2N7yBxEXXX2hA", "$Bq7VSYE3fLk5gqS2MqUiJFXj1D2GSM2N7yBxEXXX2hB"},
		AuthEvents: []string{"$c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0cw", "$cG93ZXJsZXZlbHNwb3dlcmxldmVsc3Bvd2VybGV2ZQ", "$bWVtYmVybWVtYmVybWVtYmVybWVtYmVybWVtYmVyMQ"},
		Depth:      4821, OriginServerTS: 1712345678901}, s.name, s.keyID, s.key)
	if err != nil {
		b.Fatal(err)
	}
	raw := []byte(p.Raw)
	getKey := s.addTo(keys{}).get
	ctx := context.Background()
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Parse(V11, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse+verify", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			q, err := Parse(V11, raw)
			if err != nil {
				b.Fatal(err)
			}
			if err := VerifyEventSignatures(ctx, V11, q, getKey); err != nil {
				b.Fatal(err)
			}
			if err := q.CheckContentHash(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("client-json", func(b *testing.B) {
		unsigned := json.RawMessage(`{"age":1234,"transaction_id":"m1712345678901.0"}`)
		buf := make([]byte, 0, 2048)
		b.ReportAllocs()
		for b.Loop() {
			buf = p.AppendClientJSON(buf[:0], unsigned)
		}
	})
	b.Run("splice-unsigned", func(b *testing.B) {
		stored := p.ClientJSON(nil)
		unsigned := json.RawMessage(`{"age":1234,"transaction_id":"m1712345678901.0"}`)
		buf := make([]byte, 0, 2048)
		b.ReportAllocs()
		for b.Loop() {
			buf = SpliceUnsigned(buf[:0], stored, unsigned)
		}
	})
}
