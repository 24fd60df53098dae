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
	// SubjectReceipt announces a new receipt: data is the JSON {"room_id": ..., "user_id": ...,
	// "private": bool, "pos": ...} (pos of the receipts stream).
	SubjectReceipt = "hs.receipt"
	// SubjectTyping carries typing changes, which live in memory on every node: data is the JSON
	// {"room_id": ..., "user_id": ..., "typing": bool, "expires_ms": ..., "node": ...}.
	SubjectTyping = "hs.typing"
	// SubjectPresence carries a user's presence state (changes and rate-limited heartbeats), which
	// lives in memory on every node: data is the JSON of presence.wireState.
	SubjectPresence = "hs.presence"
	// SubjectWake asks every node to wake users' syncs (changes with no stream subject of their
	// own: to-device messages, key uploads): data is the JSON {"users": [...], "sharing": bool},
	// sharing meaning also everyone who shares a room with them.
	SubjectWake = "hs.wake"
	// SubjectMediaUploaded announces that an asynchronous media upload got its content, waking
	// downloads waiting for it on every node: data is mxc://server/id.
	SubjectMediaUploaded = "hs.media.uploaded"
	// SubjectFederationOutbox announces that events were queued for other servers (table
	// federation_outbox), waking the federation sender: data is the JSON list of destinations.
	SubjectFederationOutbox = "hs.federation.outbox"
)

// SubjectRoomEvent is where a room's new stream positions are announced after commit: data is
// the JSON {"room_id": ..., "pos": ...}. Subscribe to SubjectRoomEvents for every room.
func SubjectRoomEvent(roomID string) string { return "hs.room." + subjectToken(roomID) }

// SubjectRoomEvents matches SubjectRoomEvent of every room.
const SubjectRoomEvents = "hs.room.*"

// subjectToken makes an ID usable as one subject token (NATS tokens may not hold '.', '*', '>' or
// whitespace).
func subjectToken(id string) string {
	b := []byte(id)
	for i, c := range b {
		switch c {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			b[i] = '_'
		}
	}
	return string(b)
}

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
