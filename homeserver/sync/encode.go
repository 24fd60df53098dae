package sync

import (
	"encoding/json"
	"slices"
	"strconv"
)

// AppendJSON appends the response's JSON to b. It writes what encoding/json would (the same
// members; TestAppendJSONMatchesMarshal holds them together) without re-validating every event:
// the events are bytes this server produced (stored client JSON, or encoding/json output), and
// checking them again on every response was a tenth of the server's time at fan-out. The output
// has no newline, which the SSE transport relies on.
func (r *Response) AppendJSON(b []byte) []byte {
	b = append(b, `{"next_batch":`...)
	b = appendString(b, r.NextBatch)
	b = append(b, `,"rooms":{"join":{`...)
	first := true
	for id, jr := range r.Rooms.Join {
		b = appendKey(b, &first, id)
		b = jr.appendJSON(b)
	}
	b = append(b, `},"invite":`...)
	if len(r.Rooms.Invite) == 0 {
		b = append(b, "{}"...) // nearly every response
	} else {
		b = appendMarshal(b, r.Rooms.Invite)
	}
	b = append(b, `,"knock":`...)
	if len(r.Rooms.Knock) == 0 {
		b = append(b, "{}"...)
	} else {
		b = appendMarshal(b, r.Rooms.Knock)
	}
	b = append(b, `,"leave":{`...)
	first = true
	for id, lr := range r.Rooms.Leave {
		b = appendKey(b, &first, id)
		b = append(b, `{"state":`...)
		b = lr.State.appendJSON(b)
		b = append(b, `,"timeline":`...)
		b = lr.Timeline.appendJSON(b)
		b = append(b, `,"account_data":`...)
		b = lr.AccountData.appendJSON(b)
		b = append(b, '}')
	}
	b = append(b, `}},"presence":`...)
	b = r.Presence.appendJSON(b)
	b = append(b, `,"account_data":`...)
	b = r.AccountData.appendJSON(b)
	if r.ToDevice != nil {
		b = append(b, `,"to_device":`...)
		b = r.ToDevice.appendJSON(b)
	}
	if r.DeviceLists != nil {
		b = append(b, `,"device_lists":`...)
		b = appendMarshal(b, r.DeviceLists)
	}
	if r.OneTimeKeysCount != nil {
		b = append(b, `,"device_one_time_keys_count":`...)
		if r.countsJSON != nil {
			b = append(b, r.countsJSON...)
		} else {
			b = appendCounts(b, r.OneTimeKeysCount)
		}
	}
	if r.UnusedFallbackKeyTypes != nil {
		b = append(b, `,"device_unused_fallback_key_types":[`...)
		for i, k := range r.UnusedFallbackKeyTypes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func (jr *JoinedRoom) appendJSON(b []byte) []byte {
	b = append(b, '{')
	if jr.Summary != nil {
		b = append(b, `"summary":`...)
		b = appendMarshal(b, jr.Summary)
		b = append(b, ',')
	}
	if jr.shared != nil {
		b = append(b, jr.shared...)
	} else {
		b = append(b, `"state":`...)
		b = jr.State.appendJSON(b)
		b = append(b, `,"timeline":`...)
		b = jr.Timeline.appendJSON(b)
	}
	b = append(b, `,"ephemeral":`...)
	b = jr.Ephemeral.appendJSON(b)
	b = append(b, `,"account_data":`...)
	b = jr.AccountData.appendJSON(b)
	b = append(b, `,"unread_notifications":`...)
	b = jr.UnreadNotifications.appendJSON(b)
	if len(jr.UnreadThreadNotifications) > 0 {
		b = append(b, `,"unread_thread_notifications":{`...)
		first := true
		for id, u := range jr.UnreadThreadNotifications {
			b = appendKey(b, &first, id)
			b = u.appendJSON(b)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func (u Unread) appendJSON(b []byte) []byte {
	b = append(b, `{"notification_count":`...)
	b = strconv.AppendInt(b, int64(u.NotificationCount), 10)
	b = append(b, `,"highlight_count":`...)
	b = strconv.AppendInt(b, int64(u.HighlightCount), 10)
	return append(b, '}')
}

func (t *Timeline) appendJSON(b []byte) []byte {
	b = append(b, `{"events":`...)
	b = appendEvents(b, t.Events)
	b = append(b, `,"limited":`...)
	b = strconv.AppendBool(b, t.Limited)
	if t.PrevBatch != "" {
		b = append(b, `,"prev_batch":`...)
		b = appendString(b, t.PrevBatch)
	}
	return append(b, '}')
}

func (l *EventList) appendJSON(b []byte) []byte {
	b = append(b, `{"events":`...)
	b = appendEvents(b, l.Events)
	return append(b, '}')
}

// appendEvents appends events as an array (never null), as they are.
func appendEvents(b []byte, evs []json.RawMessage) []byte {
	b = append(b, '[')
	for i, e := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

// appendCounts appends a non-nil map of counts, keys sorted as encoding/json sorts them (every
// response of a device with encryption carries one).
func appendCounts(b []byte, m map[string]int) []byte {
	var small [4]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	first := true
	for _, k := range keys {
		b = appendKey(b, &first, k)
		b = strconv.AppendInt(b, int64(m[k]), 10)
	}
	return append(b, '}')
}

// appendKey appends an object member's key (and the comma before all but the first).
func appendKey(b []byte, first *bool, key string) []byte {
	if !*first {
		b = append(b, ',')
	}
	*first = false
	b = appendString(b, key)
	return append(b, ':')
}

// appendString appends s as a JSON string, escaped as encoding/json does.
func appendString(b []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	return appendMarshal(b, s)
}

// appendMarshal appends encoding/json's output for the small, rare parts of a response.
func appendMarshal(b []byte, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		// Only maps, slices and structs of strings and numbers come here, which always marshal.
		panic("sync: marshal response part: " + err.Error())
	}
	return append(b, data...)
}
