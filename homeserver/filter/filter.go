// Package filter is the Matrix event filter (client-server API, "Filtering"): the Filter types of
// definitions/sync_filter.yaml, event_filter.yaml and room_event_filter.yaml, and Parse, which
// checks a filter's shape and answers the spec's errors. Filters are uploaded with
// POST /user/{userId}/filter and applied by /sync and /messages.
package filter

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Event formats of Filter.EventFormat.
const (
	FormatClient     = "client"
	FormatFederation = "federation"
)

// Filter is the spec's Filter. A nil list means the key was absent ("no restriction"); an empty,
// non-nil list means it was present and empty (for include lists: "match nothing").
type Filter struct {
	EventFields []string     `json:"event_fields,omitzero"`
	EventFormat string       `json:"event_format,omitempty"` // "" (= client), "client" or "federation"
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter is the spec's EventFilter.
type EventFilter struct {
	Limit      int64    `json:"limit,omitempty"` // 0 when absent; otherwise > 0
	NotSenders []string `json:"not_senders,omitzero"`
	NotTypes   []string `json:"not_types,omitzero"`
	Senders    []string `json:"senders,omitzero"`
	Types      []string `json:"types,omitzero"`
}

// RoomEventFilter is the spec's RoomEventFilter: an EventFilter with room and lazy-loading keys.
type RoomEventFilter struct {
	EventFilter
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitzero"`
	Rooms                     []string `json:"rooms,omitzero"`
	ContainsURL               *bool    `json:"contains_url,omitempty"` // nil: url is not considered
}

// RoomFilter is the spec's RoomFilter.
type RoomFilter struct {
	NotRooms     []string         `json:"not_rooms,omitzero"`
	Rooms        []string         `json:"rooms,omitzero"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// Parse checks that data is a filter of the spec's shape and decodes it. Keys the spec does not
// define are ignored. Errors are Matrix errors: M_NOT_JSON for data that is not JSON, M_BAD_JSON
// (naming the offending key) for a value of the wrong type, a limit that is not an integer greater
// than 0, an unknown event_format, or a sender or room that is not a user or room ID.
func Parse(data []byte) (Filter, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || !json.Valid(data) {
		return Filter{}, spec.ErrNotJSON.With("Filter is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return Filter{}, spec.ErrNotJSON.With("Filter is not valid JSON")
	}
	if err := check("", v, filterSchema); err != nil {
		return Filter{}, err
	}
	var f Filter
	if err := json.Unmarshal(data, &f); err != nil {
		// check accepted it, so this would be a disagreement between the schema and the types.
		return Filter{}, spec.ErrBadJSON.Withf("Invalid filter: %v", err)
	}
	return f, nil
}

// kind is the type a filter key must have. Every key may be absent; none may be null.
type kind int

const (
	kBool kind = iota
	kPositiveInt
	kEventFormat
	kStrings
	kUserIDs
	kRoomIDs
	kObject // with the fields of schema.fields
)

type schema struct {
	kind   kind
	fields map[string]schema // for kObject
}

var (
	eventFilterFields = map[string]schema{
		"limit":       {kind: kPositiveInt},
		"not_senders": {kind: kUserIDs},
		"not_types":   {kind: kStrings},
		"senders":     {kind: kUserIDs},
		"types":       {kind: kStrings},
	}
	eventFilterSchema     = schema{kind: kObject, fields: eventFilterFields}
	roomEventFilterSchema = schema{kind: kObject, fields: with(eventFilterFields, map[string]schema{
		"unread_thread_notifications": {kind: kBool},
		"lazy_load_members":           {kind: kBool},
		"include_redundant_members":   {kind: kBool},
		"not_rooms":                   {kind: kRoomIDs},
		"rooms":                       {kind: kRoomIDs},
		"contains_url":                {kind: kBool},
	})}
	roomFilterSchema = schema{kind: kObject, fields: map[string]schema{
		"not_rooms":     {kind: kRoomIDs},
		"rooms":         {kind: kRoomIDs},
		"ephemeral":     roomEventFilterSchema,
		"include_leave": {kind: kBool},
		"state":         roomEventFilterSchema,
		"timeline":      roomEventFilterSchema,
		"account_data":  roomEventFilterSchema,
	}}
	filterSchema = schema{kind: kObject, fields: map[string]schema{
		"event_fields": {kind: kStrings},
		"event_format": {kind: kEventFormat},
		"presence":     eventFilterSchema,
		"account_data": eventFilterSchema,
		"room":         roomFilterSchema,
	}}
)

func with(base, more map[string]schema) map[string]schema {
	out := make(map[string]schema, len(base)+len(more))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// check validates a value decoded with UseNumber against s; path names it in errors ("" for the
// whole filter).
func check(path string, v any, s schema) error {
	bad := func(what string) error {
		if path == "" {
			return spec.ErrBadJSON.Withf("The filter must be %s", what)
		}
		return spec.ErrBadJSON.Withf("%s must be %s", path, what)
	}
	switch s.kind {
	case kBool:
		if _, ok := v.(bool); !ok {
			return bad("a boolean")
		}
	case kPositiveInt:
		n, ok := v.(json.Number)
		if !ok {
			return bad("an integer greater than 0")
		}
		if i, err := strconv.ParseInt(n.String(), 10, 64); err != nil || i <= 0 {
			return bad("an integer greater than 0")
		}
	case kEventFormat:
		if f, ok := v.(string); !ok || (f != FormatClient && f != FormatFederation) {
			return bad(`"client" or "federation"`)
		}
	case kStrings, kUserIDs, kRoomIDs:
		list, ok := v.([]any)
		if !ok {
			return bad("an array of strings")
		}
		for i, item := range list {
			str, ok := item.(string)
			if !ok {
				return spec.ErrBadJSON.Withf("%s[%d] must be a string", path, i)
			}
			switch {
			case s.kind == kUserIDs:
				if _, err := spec.ParseUserID(str); err != nil {
					return spec.ErrBadJSON.Withf("%s[%d] is not a user ID: %v", path, i, err)
				}
			case s.kind == kRoomIDs && !looksLikeRoomID(str):
				return spec.ErrBadJSON.Withf("%s[%d] is not a room ID", path, i)
			}
		}
	case kObject:
		obj, ok := v.(map[string]any)
		if !ok {
			return bad("an object")
		}
		for _, key := range slices.Sorted(maps.Keys(obj)) { // sorted: the same error for the same filter
			sub, known := s.fields[key]
			if !known {
				continue
			}
			subPath := key
			if path != "" {
				subPath = path + "." + key
			}
			if err := check(subPath, obj[key], sub); err != nil {
				return err
			}
		}
	}
	return nil
}

// looksLikeRoomID applies the schema's pattern for room IDs ("^!") and the 255-byte limit. Room
// IDs are opaque to clients, and which rooms exist is the filter user's business, so no more is
// checked here.
func looksLikeRoomID(s string) bool {
	return len(s) > 1 && len(s) <= 255 && strings.HasPrefix(s, "!")
}
