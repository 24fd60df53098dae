package filter_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

func TestParseValid(t *testing.T) {
	// The example of POST /user/{userId}/filter in the spec, plus every other key of the schema.
	const doc = `{
		"room": {
			"state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"], "lazy_load_members": true},
			"timeline": {"limit": 10, "types": ["m.room.message"], "not_rooms": ["!726s6s6q:example.com"],
				"not_senders": ["@spam:example.com"], "contains_url": false, "unread_thread_notifications": true},
			"ephemeral": {"types": ["m.receipt", "m.typing"], "not_rooms": ["!726s6s6q:example.com"],
				"not_senders": ["@spam:example.com"]},
			"account_data": {"types": [], "include_redundant_members": true},
			"rooms": ["!Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"],
			"include_leave": true
		},
		"presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"], "senders": []},
		"account_data": {"limit": 1, "not_types": ["x.*"]},
		"event_format": "client",
		"event_fields": ["type", "content", "sender"],
		"org.example.unknown": [null, 1]
	}`
	f, err := filter.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	no := false
	want := filter.Filter{
		EventFields: []string{"type", "content", "sender"},
		EventFormat: filter.FormatClient,
		Presence:    &filter.EventFilter{Types: []string{"m.presence"}, NotSenders: []string{"@alice:example.com"}, Senders: []string{}},
		AccountData: &filter.EventFilter{Limit: 1, NotTypes: []string{"x.*"}},
		Room: &filter.RoomFilter{
			Rooms:        []string{"!Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"},
			IncludeLeave: true,
			State: &filter.RoomEventFilter{EventFilter: filter.EventFilter{Types: []string{"m.room.*"}},
				NotRooms: []string{"!726s6s6q:example.com"}, LazyLoadMembers: true},
			Timeline: &filter.RoomEventFilter{EventFilter: filter.EventFilter{Limit: 10, Types: []string{"m.room.message"},
				NotSenders: []string{"@spam:example.com"}}, NotRooms: []string{"!726s6s6q:example.com"}, ContainsURL: &no,
				UnreadThreadNotifications: true},
			Ephemeral: &filter.RoomEventFilter{EventFilter: filter.EventFilter{Types: []string{"m.receipt", "m.typing"},
				NotSenders: []string{"@spam:example.com"}}, NotRooms: []string{"!726s6s6q:example.com"}},
			AccountData: &filter.RoomEventFilter{EventFilter: filter.EventFilter{Types: []string{}}, IncludeRedundantMembers: true},
		},
	}
	if !reflect.DeepEqual(f, want) {
		t.Fatalf("Parse:\n got %+v\nwant %+v", f, want)
	}
	// An absent include list means "everything", an empty one "nothing": the two must differ.
	if f.Presence.Senders == nil || f.AccountData.Types != nil {
		t.Fatalf("absent and empty lists are not told apart: %#v %#v", f.Presence, f.AccountData)
	}
	if f, err := filter.Parse([]byte(`{}`)); err != nil || !reflect.DeepEqual(f, filter.Filter{}) {
		t.Fatalf("Parse({}) = %+v, %v", f, err)
	}
}

func TestParseInvalid(t *testing.T) {
	cases := []struct {
		name, doc, errcode string
	}{
		{"not json", `{"room":`, "M_NOT_JSON"},
		{"empty", ``, "M_NOT_JSON"},
		{"array", `[]`, "M_BAD_JSON"},
		{"string", `"filter"`, "M_BAD_JSON"},
		{"limit zero", `{"room":{"timeline":{"limit":0}}}`, "M_BAD_JSON"},
		{"limit negative", `{"presence":{"limit":-5}}`, "M_BAD_JSON"},
		{"limit fraction", `{"room":{"timeline":{"limit":1.5}}}`, "M_BAD_JSON"},
		{"limit string", `{"room":{"timeline":{"limit":"10"}}}`, "M_BAD_JSON"},
		{"limit null", `{"room":{"timeline":{"limit":null}}}`, "M_BAD_JSON"},
		{"limit overflow", `{"account_data":{"limit":99999999999999999999}}`, "M_BAD_JSON"},
		{"event_format unknown", `{"event_format":"xml"}`, "M_BAD_JSON"},
		{"event_format number", `{"event_format":1}`, "M_BAD_JSON"},
		{"event_fields not array", `{"event_fields":"type"}`, "M_BAD_JSON"},
		{"event_fields number", `{"event_fields":["type",1]}`, "M_BAD_JSON"},
		{"event_fields null item", `{"event_fields":[null]}`, "M_BAD_JSON"},
		{"room not object", `{"room":"all"}`, "M_BAD_JSON"},
		{"presence array", `{"presence":[]}`, "M_BAD_JSON"},
		{"timeline not object", `{"room":{"timeline":true}}`, "M_BAD_JSON"},
		{"types not array", `{"room":{"timeline":{"types":"m.room.message"}}}`, "M_BAD_JSON"},
		{"not_types object", `{"account_data":{"not_types":{}}}`, "M_BAD_JSON"},
		{"senders not user ids", `{"room":{"timeline":{"senders":["alice"]}}}`, "M_BAD_JSON"},
		{"not_senders not user ids", `{"presence":{"not_senders":["@alice"]}}`, "M_BAD_JSON"},
		{"rooms not room ids", `{"room":{"rooms":["#alias:example.com"]}}`, "M_BAD_JSON"},
		{"not_rooms not room ids", `{"room":{"state":{"not_rooms":["!"]}}}`, "M_BAD_JSON"},
		{"include_leave string", `{"room":{"include_leave":"yes"}}`, "M_BAD_JSON"},
		{"contains_url number", `{"room":{"timeline":{"contains_url":1}}}`, "M_BAD_JSON"},
		{"lazy_load_members null", `{"room":{"state":{"lazy_load_members":null}}}`, "M_BAD_JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := filter.Parse([]byte(c.doc))
			var e *spec.Error
			if !errors.As(err, &e) || e.Code != c.errcode || e.Status != 400 {
				t.Fatalf("Parse(%s) = %v, want %s (400)", c.doc, err, c.errcode)
			}
		})
	}
}
