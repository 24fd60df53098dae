package room

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// StrippedEvent is an entry of invite_room_state or knock_room_state that is not a full event but
// a stripped state event: type, state_key, sender and content, without signatures, hashes or an
// event ID. Servers sent that form before v1.16 and some still do (Dendrite); the spec lets a
// server accept it for room versions 1 to 11 (event.Version.FullEventsInStrippedState).
//
// Nothing vouches for it but the server that sent it, so it is only shown: it is stored as a
// rejected outlier under an ID that no real event can have, which keeps it out of auth checks,
// state resolution and every read by other servers, and it gives way to the room's state when a
// join brings it.
type StrippedEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Sender   string          `json:"sender"`
	Content  json.RawMessage `json:"content"`
}

// storageEvent is the row that keeps e for roomID. Its event ID is "$stripped:" and the SHA-256
// of the room and the entry: stable for repeats of the same entry, and neither the 44-character
// form of room versions 3 and later nor a "$local:server" ID a server could have created. PDU and
// client JSON both hold the stripped event itself (/sync's invite_state reads type, state_key,
// sender and content from it).
func (e StrippedEvent) storageEvent(roomID string) (storage.Event, error) {
	if e.Content == nil {
		e.Content = json.RawMessage("{}")
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return storage.Event{}, err
	}
	sum := sha256.Sum256(append([]byte(roomID+"\x00"), raw...))
	stateKey := e.StateKey
	return storage.Event{EventID: "$stripped:" + hex.EncodeToString(sum[:]), RoomID: roomID, Type: e.Type,
		StateKey: &stateKey, Sender: e.Sender, Outlier: true, Rejected: true, PDU: raw, ClientJSON: raw}, nil
}
