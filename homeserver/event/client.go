package event

import (
	"encoding/json"
	"strconv"
)

// The client-server API event format (ClientEvent): event_id, room_id, sender, type, state_key,
// content, origin_server_ts, unsigned; none of the federation-only keys (hashes, signatures,
// auth_events, prev_events, depth).
//
// It is assembled from the canonical bytes without decoding content, and "unsigned" sorts after
// every other key, so a stored ClientJSON(nil) can have the per-request unsigned spliced onto
// its end (SpliceUnsigned) and stays canonical. That is how the sync path should serve events:
// compute the client form once when the event is stored, then copy bytes.

// ClientJSON returns the event in the client format with the given unsigned object (which must
// be a JSON object, or empty for none).
func (p *PDU) ClientJSON(unsigned json.RawMessage) []byte {
	return p.AppendClientJSON(make([]byte, 0, len(p.Content)+len(unsigned)+300), unsigned)
}

// AppendClientJSON appends the event in the client format to dst.
//
// An m.room.redaction carries the redacted event's ID both at the top level and in content, as
// room version 11 asks servers to do for clients (only one of them is part of the event: the
// top level before v11, content from v11).
func (p *PDU) AppendClientJSON(dst []byte, unsigned json.RawMessage) []byte {
	content := []byte(p.Content)
	if len(content) == 0 {
		content = []byte("{}")
	}
	redacts := p.RedactsID()
	if redacts != "" && !p.Version.RedactsInContent() {
		if c, err := appendEdited(nil, content, edit{"redacts", appendQuoted(nil, redacts)}); err == nil {
			content = c
		}
	}
	dst = append(dst, `{"content":`...)
	dst = append(dst, content...)
	dst = append(dst, `,"event_id":`...)
	dst = appendQuoted(dst, p.EventID)
	dst = append(dst, `,"origin_server_ts":`...)
	dst = strconv.AppendInt(dst, p.OriginServerTS, 10)
	if redacts != "" {
		dst = append(dst, `,"redacts":`...)
		dst = appendQuoted(dst, redacts)
	}
	dst = append(dst, `,"room_id":`...)
	dst = appendQuoted(dst, p.EffectiveRoomID())
	dst = append(dst, `,"sender":`...)
	dst = appendQuoted(dst, p.Sender)
	if p.StateKey != nil {
		dst = append(dst, `,"state_key":`...)
		dst = appendQuoted(dst, *p.StateKey)
	}
	dst = append(dst, `,"type":`...)
	dst = appendQuoted(dst, p.Type)
	if len(unsigned) > 0 {
		dst = append(dst, `,"unsigned":`...)
		dst = append(dst, unsigned...)
	}
	return append(dst, '}')
}

// SpliceUnsigned appends to dst a client event stored as ClientJSON(nil) with unsigned added.
// clientJSON must end in '}' and have no unsigned key of its own.
func SpliceUnsigned(dst, clientJSON []byte, unsigned json.RawMessage) []byte {
	if len(unsigned) == 0 || len(clientJSON) == 0 {
		return append(dst, clientJSON...)
	}
	dst = append(dst, clientJSON[:len(clientJSON)-1]...)
	dst = append(dst, `,"unsigned":`...)
	dst = append(dst, unsigned...)
	return append(dst, '}')
}
