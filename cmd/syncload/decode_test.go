package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

// decodeCases are sync responses and WebSocket messages as the server writes them, and the
// shapes encoding/json also accepts (null for objects, arrays and strings, escapes, unknown
// members of every kind, white space).
var decodeCases = []string{
	`{"next_batch":"s1_2","rooms":{"join":{},"invite":{},"leave":{}},"presence":{"events":[]}}`,
	`{"next_batch":"s9","account_data":{"events":[{"type":"x","content":{"a":[1,2.5,-3e7,{"b":null}],"t":true,"f":false}}]},` +
		`"rooms":{"join":{"!a:hs":{"timeline":{"events":[{"type":"m.room.message","sender":"@s:hs","event_id":"$e",` +
		`"origin_server_ts":1700000000000,"content":{"msgtype":"m.text","body":"syncload r #3 sent=123"},"unsigned":{"age":5}},` +
		`{"type":"m.room.member","sender":"@b:hs","state_key":"@b:hs","content":{"membership":"join"}}],"limited":true,"prev_batch":"p"},` +
		`"state":{"events":[]},"unread_notifications":{"notification_count":0}},` +
		`"!b:hs":{"timeline":{"events":[],"limited":false}}}}}`,
	` { "next_batch" : "a\"b\\c\u00e9" , "rooms" : { "join" : { "!\u0061:hs" : { "timeline" : { "events" : [ { "content" : { "body" : "tab\there \ud83d\ude00" } } ] } } } } } `,
	`{"next_batch":null,"rooms":null}`,
	`{"rooms":{"join":{"!a:hs":{"timeline":{"events":null,"limited":null}}}}}`,
	`{"rooms":{"join":{"!a:hs":{"timeline":null}}}}`,
	`{"rooms":{"join":{"!a:hs":{"timeline":{"events":[{"type":null,"content":null}]}}}}}`,
	`{"rooms":{"join":{"":{"timeline":{"limited":true}},"":{}}}}`, // a repeated key: the last wins
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for _, c := range decodeCases {
		var got, want syncResponse
		if err := decodeSync([]byte(c), &got); err != nil {
			t.Fatalf("decodeSync(%s): %v", c, err)
		}
		if err := json.Unmarshal([]byte(c), &want); err != nil {
			t.Fatalf("json.Unmarshal(%s): %v", c, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\ndecodeSync %+v\njson       %+v", c, got, want)
		}
		msg := `{"type":"sync","next_batch":"x","body":` + c + `,"extra":[1]}`
		var gotWS, wantWS wsIn
		if err := decodeWS([]byte(msg), &gotWS); err != nil {
			t.Fatalf("decodeWS(%s): %v", msg, err)
		}
		_ = json.Unmarshal([]byte(msg), &wantWS)
		if !reflect.DeepEqual(gotWS, wantWS) {
			t.Errorf("%s:\ndecodeWS %+v\njson     %+v", msg, gotWS, wantWS)
		}
	}
	var m wsIn
	if err := decodeWS([]byte(`{"type":"error","id":"r1","errcode":"M_FORBIDDEN","error":"no"}`), &m); err != nil ||
		!reflect.DeepEqual(m, wsIn{Type: "error", ID: "r1", Errcode: "M_FORBIDDEN", Error: "no"}) {
		t.Errorf("error message: %+v %v", m, err)
	}
	for _, bad := range []string{``, `{`, `{"next_batch":"a"`, `{"next_batch":"a"}x`, `{"rooms":{"join":[]}}`, `{"a":tru}`,
		`{"a":01.}`, `{"a":"\x01"}`, `{"a" 1}`, `{"a":1,}`, `[1 2]`, `{"a":"\q"}`, `{"rooms":{"join":{"!a":{"timeline":{"limited":"yes"}}}}}`} {
		var s syncResponse
		if err := decodeSync([]byte(bad), &s); err == nil {
			t.Errorf("decodeSync(%q) accepted", bad)
		}
	}
}

// FuzzDecode: on any input encoding/json decodes, decodeSync decodes the same.
func FuzzDecode(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want syncResponse
		if json.Unmarshal(data, &want) != nil {
			return
		}
		var got syncResponse
		if err := decodeSync(data, &got); err != nil {
			t.Fatalf("decodeSync(%q): %v; encoding/json accepts it", data, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\ndecodeSync %+v\njson       %+v", data, got, want)
		}
	})
}

func BenchmarkDecodeSync(b *testing.B) {
	data := []byte(decodeCases[1])
	b.Run("decodeSync", func(b *testing.B) {
		for b.Loop() {
			var s syncResponse
			_ = decodeSync(data, &s)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var s syncResponse
			_ = json.Unmarshal(data, &s)
		}
	})
}
