package room

import (
	"context"
	"math"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// timestampBatch is how many events one query of TimestampToEvent reads.
const timestampBatch = 100

// TimestampToEvent is GET /rooms/{roomId}/timestamp_to_event: the first event the user may see at
// or after ts (forward), or at or before it (backward), by origin_server_ts then stream order.
func (s *Service) TimestampToEvent(ctx context.Context, r Reader, roomID string, ts int64, forward bool) (string, int64, error) {
	c := s.store.Read()
	v, err := s.readable(ctx, c, roomID, r.UserID)
	if err != nil {
		return "", 0, err
	}
	curTS, curStream := ts, int64(-1)
	if !forward {
		curStream = math.MaxInt64
	}
	for scanned := 0; scanned < maxScan; {
		batch, err := c.EventsByTimestamp(ctx, roomID, curTS, curStream, forward, timestampBatch)
		if err != nil {
			return "", 0, err
		}
		for i := range batch {
			e := &batch[i]
			if v.canSee(e) {
				return e.EventID, e.OriginServerTS, nil
			}
			curTS, curStream = e.OriginServerTS, e.StreamPos
		}
		scanned += len(batch)
		if len(batch) < timestampBatch {
			break
		}
	}
	dir := "forward"
	if !forward {
		dir = "backward"
	}
	return "", 0, spec.ErrNotFound.Withf("Unable to find event from %d in %s direction", ts, dir)
}
