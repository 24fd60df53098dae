package event

import (
	"errors"
	"strings"
	"testing"
)

// redactionInput is an event with every top-level key the algorithms treat differently.
func redactionInput(eventType, content string) string {
	return `{"type":"` + eventType + `","content":` + content + `,
	"auth_events":["$a"],"depth":1,"event_id":"$e","hashes":{"sha256":"h"},"membership":"join",
	"origin":"o.example","origin_server_ts":1,"prev_events":["$p"],"prev_state":[],"room_id":"!r:o.example",
	"sender":"@s:o.example","signatures":{"o.example":{"ed25519:1":"sig"}},"state_key":"",
	"unsigned":{"age":1},"foo":"bar","redacts":"$r"}`
}

// redactedOutput is the expected redaction of redactionInput.
func redactedOutput(eventType, content string, v11 bool) string {
	legacy := `"membership":"join","origin":"o.example",`
	prevState := `"prev_state":[],`
	if v11 {
		legacy, prevState = "", ""
	}
	return `{"auth_events":["$a"],"content":` + content + `,"depth":1,"event_id":"$e","hashes":{"sha256":"h"},` +
		legacy + `"origin_server_ts":1,"prev_events":["$p"],` + prevState + `"room_id":"!r:o.example",` +
		`"sender":"@s:o.example","signatures":{"o.example":{"ed25519:1":"sig"}},"state_key":"","type":"` + eventType + `"}`
}

func TestRedact(t *testing.T) {
	const (
		member = `{"membership":"join","displayname":"S","avatar_url":"mxc://x/y",
			"join_authorised_via_users_server":"@m:o.example",
			"third_party_invite":{"display_name":"s","signed":{"mxid":"@s:o.example","token":"t","signatures":{}}}}`
		create     = `{"creator":"@s:o.example","room_version":"9","m.federate":false,"predecessor":{"room_id":"!old:o.example"}}`
		joinRules  = `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!space:o.example"}],"x":1}`
		powers     = `{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"notifications":{"room":50},"redact":50,"state_default":50,"users":{"@s:o.example":100},"users_default":0}`
		redaction  = `{"redacts":"$target","reason":"spam"}`
		visibility = `{"history_visibility":"shared","x":1}`
	)
	type want struct{ v6, v8, v9, v11 string } // v6-7, v8, v9-10, v11-12
	for _, tc := range []struct {
		name, eventType, content string
		want                     want
	}{
		{"member", "m.room.member", member, want{
			v6:  `{"membership":"join"}`,
			v8:  `{"membership":"join"}`,
			v9:  `{"join_authorised_via_users_server":"@m:o.example","membership":"join"}`,
			v11: `{"join_authorised_via_users_server":"@m:o.example","membership":"join","third_party_invite":{"signed":{"mxid":"@s:o.example","signatures":{},"token":"t"}}}`,
		}},
		{"member, third_party_invite without signed", "m.room.member", `{"membership":"invite","third_party_invite":{"display_name":"x"}}`, want{
			v6: `{"membership":"invite"}`, v8: `{"membership":"invite"}`, v9: `{"membership":"invite"}`,
			v11: `{"membership":"invite","third_party_invite":{}}`,
		}},
		{"member, third_party_invite not an object", "m.room.member", `{"membership":"invite","third_party_invite":"x"}`, want{
			v6: `{"membership":"invite"}`, v8: `{"membership":"invite"}`, v9: `{"membership":"invite"}`, v11: `{"membership":"invite"}`,
		}},
		{"create", "m.room.create", create, want{
			v6: `{"creator":"@s:o.example"}`, v8: `{"creator":"@s:o.example"}`, v9: `{"creator":"@s:o.example"}`,
			v11: `{"creator":"@s:o.example","m.federate":false,"predecessor":{"room_id":"!old:o.example"},"room_version":"9"}`,
		}},
		{"join rules", "m.room.join_rules", joinRules, want{
			v6:  `{"join_rule":"restricted"}`,
			v8:  `{"allow":[{"room_id":"!space:o.example","type":"m.room_membership"}],"join_rule":"restricted"}`,
			v9:  `{"allow":[{"room_id":"!space:o.example","type":"m.room_membership"}],"join_rule":"restricted"}`,
			v11: `{"allow":[{"room_id":"!space:o.example","type":"m.room_membership"}],"join_rule":"restricted"}`,
		}},
		{"power levels", "m.room.power_levels", powers, want{
			v6:  `{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.example":100},"users_default":0}`,
			v8:  `{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.example":100},"users_default":0}`,
			v9:  `{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.example":100},"users_default":0}`,
			v11: `{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.example":100},"users_default":0}`,
		}},
		{"redaction", "m.room.redaction", redaction, want{v6: `{}`, v8: `{}`, v9: `{}`, v11: `{"redacts":"$target"}`}},
		{"history visibility", "m.room.history_visibility", visibility, want{
			v6: `{"history_visibility":"shared"}`, v8: `{"history_visibility":"shared"}`,
			v9: `{"history_visibility":"shared"}`, v11: `{"history_visibility":"shared"}`,
		}},
		{"aliases lost their protection in v6", "m.room.aliases", `{"aliases":["#a:o.example"]}`, want{v6: `{}`, v8: `{}`, v9: `{}`, v11: `{}`}},
		{"message", "m.room.message", `{"body":"secret","msgtype":"m.text"}`, want{v6: `{}`, v8: `{}`, v9: `{}`, v11: `{}`}},
		{"content not an object", "m.room.member", `"x"`, want{v6: `{}`, v8: `{}`, v9: `{}`, v11: `{}`}},
	} {
		for _, v := range Versions {
			w := tc.want.v6
			switch {
			case v.RedactionRulesV11():
				w = tc.want.v11
			case v.RedactKeepsJoinAuthorisedVia():
				w = tc.want.v9
			case v.RedactKeepsJoinRulesAllow():
				w = tc.want.v8
			}
			in := redactionInput(tc.eventType, tc.content)
			got, err := Redact(v, []byte(in))
			if err != nil {
				t.Fatalf("%s v%s: %v", tc.name, v, err)
			}
			if want := redactedOutput(tc.eventType, w, v.RedactionRulesV11()); string(got) != want {
				t.Errorf("%s v%s:\n got %s\nwant %s", tc.name, v, got, want)
			}
			// Redaction is idempotent and its output canonical.
			again, err := Redact(v, got)
			if err != nil || string(again) != string(got) {
				t.Errorf("%s v%s: redacting twice: %s, %v", tc.name, v, again, err)
			}
			if c := mustCanonical(t, got); string(c) != string(got) {
				t.Errorf("%s v%s: output not canonical", tc.name, v)
			}
		}
	}
}

func TestRedactAddsMissingContent(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"type":"m.room.message","sender":"@a:b"}`, `{"content":{},"sender":"@a:b","type":"m.room.message"}`},
		{`{"auth_events":[],"type":"m.room.message"}`, `{"auth_events":[],"content":{},"type":"m.room.message"}`},
		{`{"type":"m.room.message","zzz":1}`, `{"content":{},"type":"m.room.message"}`},
	} {
		got, err := Redact(V11, []byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("Redact(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestRedactRejects(t *testing.T) {
	for _, in := range []string{`[]`, `"x"`, `{}`, `{"type":1}`, `{"type":"m","a":1.5}`} {
		if _, err := Redact(V11, []byte(in)); err == nil {
			t.Errorf("Redact(%s) succeeded", in)
		} else if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrBadJSON) {
			t.Errorf("Redact(%s): unexpected error kind %v", in, err)
		}
	}
}

// The redacted event keeps its event ID: the reference hash is computed over the redacted form.
func TestRedactKeepsEventID(t *testing.T) {
	s := newTestServer("o.example")
	for _, v := range Versions {
		p, err := Build(v, Proto{RoomID: "!r:o.example", Sender: "@s:o.example", Type: "m.room.message",
			Content: []byte(`{"body":"` + strings.Repeat("x", 100) + `"}`), Depth: 2, OriginServerTS: 5,
			PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}}, s.name, s.keyID, s.key)
		if err != nil {
			t.Fatal(err)
		}
		red, err := Redact(v, p.Raw)
		if err != nil {
			t.Fatal(err)
		}
		id, err := EventID(v, red)
		if err != nil {
			t.Fatal(err)
		}
		if id != p.EventID {
			t.Errorf("v%s: redacted event has ID %s, original %s", v, id, p.EventID)
		}
	}
}
