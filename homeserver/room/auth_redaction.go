package room

import (
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// RedactedEventID is the event an m.room.redaction redacts: the top-level redacts before v11,
// content.redacts from v11 ("" if absent or ev is not a redaction).
func RedactedEventID(v event.Version, ev *event.PDU) string {
	if ev.Type != TypeRedaction {
		return ""
	}
	if !v.RedactsInContent() {
		return ev.Redacts
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	return c.Redacts
}

// RedactionApplies is "Handling redactions" (v3+): the auth rules accept a redaction like any other
// event (it needs only the m.room.redaction event level), but the server applies it to original
// only if the redaction's sender has at least the redact level in pl (the levels in the state
// before the redaction) or is on the same server as original's sender. Both events must already
// have passed their own checks.
func RedactionApplies(v event.Version, redaction, original *event.PDU, pl *PowerLevels) bool {
	if redaction.Type != TypeRedaction || original == nil || RedactedEventID(v, redaction) != original.EventID {
		return false
	}
	if RoomIDOf(v, original) != redaction.RoomID {
		return false
	}
	if pl.UserLevel(redaction.Sender) >= pl.Redact {
		return true
	}
	return serverOf(redaction.Sender) == serverOf(original.Sender)
}
