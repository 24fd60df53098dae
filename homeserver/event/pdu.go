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
	// Raw is the event's exact JSON as received or created (with hashes and signatures).
	Raw json.RawMessage `json:"-"`
}

// IsState reports whether the event is a state event (has a state_key, possibly empty).
func (p *PDU) IsState() bool { return p.StateKey != nil }
