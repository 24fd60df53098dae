package federation

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// strippedRoomState sorts the entries of an invite's invite_room_state or a send_knock answer's
// knock_room_state (rooms of version v):
//
//   - full events (with signatures) must pass the checks of steps 1 to 3 (format, signatures,
//     content hash); those that fail are dropped;
//   - entries without signatures are the stripped state events of before v1.16 (type,
//     state_key, sender, content). Dendrite still sends them for every room version. They are
//     accepted for room versions 1 to 11, as the spec allows, when well formed (type a string,
//     state_key a string, sender a user ID, content an object); from v12 they are dropped.
//
// The caller checks that the full events are of the room; bare entries carry no room ID.
func (a *API) strippedRoomState(ctx context.Context, v event.Version, raws []json.RawMessage) ([]*event.PDU, []room.StrippedEvent) {
	var full []json.RawMessage
	var bare []room.StrippedEvent
	for _, raw := range raws {
		var head struct {
			Signatures json.RawMessage `json:"signatures"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			a.log.Info("federation: dropped a stripped state entry", "err", err)
			continue
		}
		if head.Signatures != nil || v.FullEventsInStrippedState() {
			full = append(full, raw)
			continue
		}
		if s, ok := bareStrippedEvent(raw); ok {
			bare = append(bare, s)
		} else {
			a.log.Info("federation: dropped a malformed stripped state event")
		}
	}
	return a.checkAll(ctx, v, full), bare
}

// bareStrippedEvent parses a stripped state event, requiring the spec's four fields in their
// types (StrippedStateEvent).
func bareStrippedEvent(raw json.RawMessage) (room.StrippedEvent, bool) {
	var f struct {
		Type     *string         `json:"type"`
		StateKey *string         `json:"state_key"`
		Sender   *string         `json:"sender"`
		Content  json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &f) != nil || f.Type == nil || f.StateKey == nil || f.Sender == nil ||
		*f.Type == "" || len(*f.Sender) < 2 || (*f.Sender)[0] != '@' || serverName(*f.Sender) == "" ||
		!bytes.HasPrefix(bytes.TrimSpace(f.Content), []byte("{")) {
		return room.StrippedEvent{}, false
	}
	return room.StrippedEvent{Type: *f.Type, StateKey: *f.StateKey, Sender: *f.Sender, Content: f.Content}, true
}
