package bus

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Subjects of core NATS messages. Messages carry positions and IDs, never payloads that a reader
// could instead read from storage.
const (
	// SubjectDeviceChange announces that a user's devices changed (added, deleted, renamed):
	// data is the JSON {"user_id": ..., "device_id": ..., "deleted": bool}.
	SubjectDeviceChange = "hs.device.change"
	// SubjectTokenRevoked announces that access tokens were revoked, so nodes drop cached lookups:
	// data is the user ID.
	SubjectTokenRevoked = "hs.token.revoked"
	// SubjectAccountData announces new account data: data is the JSON {"user_id": ..., "pos": ...}.
	SubjectAccountData = "hs.account_data"
)

// Durable JetStream streams. Each is listed here with its retention.
const (
	// StreamUserEvents keeps per-user change notices for consumers that must not miss one.
	StreamUserEvents = "HS_USER_EVENTS"
)

var streams = []jetstream.StreamConfig{
	{
		Name:      StreamUserEvents,
		Subjects:  []string{"hs.user.>"},
		Retention: jetstream.LimitsPolicy,
		MaxAge:    24 * time.Hour,
		Storage:   jetstream.FileStorage,
	},
}
