// Package event is the Matrix event (PDU) model: canonical JSON, content and reference hashes,
// event IDs, redaction, ed25519 signing and verification, per room version.
package event

import "encoding/json"

// PDU is a persistent data unit: a room event in its federation form (room versions 6 to 12 all
// use the "v4+" event format, whose event ID is derived from the reference hash and is not part of
// the JSON).
type PDU struct {
	// EventID is computed from the reference hash, never read from the JSON.
	EventID string `json:"-"`
	// RoomID is empty for an m.room.create event of a room version with RoomIDFromCreateEvent.
	RoomID         string                       `json:"room_id,omitempty"`
	Sender         string                       `json:"sender"`
	Type           string                       `json:"type"`
	StateKey       *string                      `json:"state_key,omitempty"`
	Content        json.RawMessage              `json:"content"`
	PrevEvents     []string                     `json:"prev_events"`
	AuthEvents     []string                     `json:"auth_events"`
	Depth          int64                        `json:"depth"`
	OriginServerTS int64                        `json:"origin_server_ts"`
	Redacts        string                       `json:"redacts,omitempty"` // top-level only before v11
	Hashes         map[string]string            `json:"hashes,omitempty"`
	Signatures     map[string]map[string]string `json:"signatures,omitempty"`
	Unsigned       json.RawMessage              `json:"unsigned,omitempty"`

	// Version is the room version the event was parsed or built for.
	Version Version `json:"-"`
	// Raw is the event's JSON as received or created (with hashes and signatures), in canonical
	// form when the PDU comes from Parse or Build; Content and Unsigned point into it. Treat it
	// as read-only.
	Raw json.RawMessage `json:"-"`

	// canonical records that Raw is canonical JSON (set by Parse and Build), so hashing and
	// verification need not canonicalise it again.
	canonical bool
}

// IsState reports whether the event is a state event (has a state_key, possibly empty).
func (p *PDU) IsState() bool { return p.StateKey != nil }

// RedactsID is the ID of the event an m.room.redaction redacts: the top-level redacts before
// room version 11, content.redacts from v11. It is empty for other events.
func (p *PDU) RedactsID() string {
	if p.Type != "m.room.redaction" {
		return ""
	}
	if !p.Version.RedactsInContent() {
		return p.Redacts
	}
	id, _ := stringMember(p.Content, "redacts")
	return id
}

// EffectiveRoomID is the event's room ID, derived from the event ID for an m.room.create event of
// a room version with RoomIDFromCreateEvent (where the create event has no room_id).
func (p *PDU) EffectiveRoomID() string {
	if p.Type == "m.room.create" && p.Version.RoomIDFromCreateEvent() {
		return RoomIDFromCreateEvent(p.EventID)
	}
	return p.RoomID
}

// CheckContentHash checks hashes.sha256 against the event (see the package function).
func (p *PDU) CheckContentHash() error {
	if p.canonical {
		return checkContentHash(p.Raw)
	}
	return CheckContentHash(p.Raw)
}

// Redacted returns the redacted form of the event, with the same event ID, for storing and
// serving an event that was redacted or failed its content hash check.
func (p *PDU) Redacted() (*PDU, error) {
	canon := []byte(p.Raw)
	if !p.canonical {
		var err error
		if canon, err = Canonical(canon); err != nil {
			return nil, err
		}
	}
	red, err := appendRedacted(make([]byte, 0, 512), p.Version, canon, false)
	if err != nil {
		return nil, err
	}
	return parseCanonical(p.Version, red, nil)
}
