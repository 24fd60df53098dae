package storage

import "context"

// CurrentStateEventRedacted returns the event ID of one current state entry and the ID of the
// redaction applied to that event ("" if none): together they identify the entry's content
// (server ACLs are cached by them, homeserver/serveracl).
func (c Conn) CurrentStateEventRedacted(ctx context.Context, roomID, typ, stateKey string) (eventID, redactedBy string, err error) {
	err = c.scanOne(ctx, `SELECT cs.event_id, e.redacted_by FROM current_state cs JOIN events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND cs.type = $2 AND cs.state_key = $3`, []any{roomID, typ, stateKey}, &eventID, &redactedBy)
	return eventID, redactedBy, err
}
