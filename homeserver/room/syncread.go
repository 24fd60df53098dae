package room

import (
	"context"
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// What /sync (package sync) needs from the room package: the history visibility rules, the client
// form of events, and pagination tokens that /messages understands. Sync reads rows itself, by
// stream position over many rooms at once; these helpers only judge and format them.

// Visibility answers whether one user may see events of one room (history visibility and the
// user's membership at each event).
type Visibility struct{ v *viewer }

// LoadVisibility reads what Visibility needs for a user in a room (two queries).
func (s *Service) LoadVisibility(ctx context.Context, userID, roomID string) (Visibility, error) {
	v, err := loadViewer(ctx, s.store.Read(), roomID, userID)
	return Visibility{v}, err
}

// CanSee reports whether the user may see the event.
func (v Visibility) CanSee(e *storage.Event) bool { return v.v.canSee(e) }

// ClientEvents turns stored events of any rooms into the client events the reader gets (unsigned
// with age, transaction_id for the sending device, redacted_because, bundled relations), in the
// same order.
func (s *Service) ClientEvents(ctx context.Context, r Reader, evs []storage.Event) ([]json.RawMessage, error) {
	return s.clientEvents(ctx, s.store.Read(), r, evs)
}

// ClientEventsUpTo is ClientEvents for callers that have seen every event up to stream position
// upTo committed (sync): callers asking for the same events up to the same position share the
// read of their relations, and for a few seconds after it (a child event committed in between
// shows up as if the read had come a little earlier; the child itself comes later in the stream).
func (s *Service) ClientEventsUpTo(ctx context.Context, r Reader, evs []storage.Event, upTo int64) ([]json.RawMessage, error) {
	return s.clientEventsAt(ctx, s.store.Read(), r, evs, upTo)
}

// PrevBatch is the /messages token of the boundary just before a timeline event: paginating
// backwards from it returns the events before e, without e.
func PrevBatch(e storage.Event) string {
	return topoToken(storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}.Before())
}
