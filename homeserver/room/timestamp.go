package room

import (
	"context"
	"errors"
	"math"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// timestampBatch is how many events one query of TimestampToEvent reads.
const timestampBatch = 100

// TimestampMatch is the event closest to a timestamp in one direction. NearGap says that events
// this server lacks may lie between the timestamp and the event, so that other servers could
// know a closer one: going forward, the event follows events this server does not have (it was
// received across a gap, or it is the first after this server joined); going backward, it is the
// latest event this server has of a room it no longer has a member in.
type TimestampMatch struct {
	EventID        string
	OriginServerTS int64
	NearGap        bool
}

// TimestampToEvent is GET /rooms/{roomId}/timestamp_to_event: the first event the user may see at
// or after ts (forward), or at or before it (backward), by origin_server_ts then stream order.
func (s *Service) TimestampToEvent(ctx context.Context, r Reader, roomID string, ts int64, forward bool) (string, int64, error) {
	m, err := s.ClosestEvent(ctx, r, roomID, ts, forward)
	return m.EventID, m.OriginServerTS, err
}

// ClosestEvent is TimestampToEvent with whether a gap could hide a closer event (M_NOT_FOUND when
// there is none here).
func (s *Service) ClosestEvent(ctx context.Context, r Reader, roomID string, ts int64, forward bool) (TimestampMatch, error) {
	c := s.store.Read()
	v, err := s.readable(ctx, c, roomID, r.UserID)
	if err != nil {
		return TimestampMatch{}, err
	}
	e, err := closestEvent(ctx, c, roomID, ts, forward, func(e *storage.Event) (bool, error) { return v.canSee(e), nil })
	if err != nil {
		return TimestampMatch{}, err
	}
	gap, err := s.nextToGap(ctx, c, e, forward)
	return TimestampMatch{EventID: e.EventID, OriginServerTS: e.OriginServerTS, NearGap: gap}, err
}

// TimestampToEventForServer is GET /_matrix/federation/v1/timestamp_to_event/{roomId}: the
// closest event the asking server may see (history visibility for servers).
func (s *Service) TimestampToEventForServer(ctx context.Context, server, roomID string, ts int64, forward bool) (string, int64, error) {
	c := s.store.Read()
	if _, err := s.versionOf(ctx, c, roomID); err != nil {
		if errors.Is(err, errRoomNotFound) {
			return "", 0, spec.ErrNotFound.With("Room not found")
		}
		return "", 0, err
	}
	sv := newServerView(c, server)
	e, err := closestEvent(ctx, c, roomID, ts, forward, func(e *storage.Event) (bool, error) { return sv.maySee(ctx, *e) })
	return e.EventID, e.OriginServerTS, err
}

// closestEvent scans the room's timeline from ts in one direction for the first event that
// visible accepts, reading at most maxScan events.
func closestEvent(ctx context.Context, c storage.Conn, roomID string, ts int64, forward bool, visible func(*storage.Event) (bool, error)) (storage.Event, error) {
	curTS, curStream := ts, int64(-1)
	if !forward {
		curStream = math.MaxInt64
	}
	for scanned := 0; scanned < maxScan; {
		batch, err := c.EventsByTimestamp(ctx, roomID, curTS, curStream, forward, timestampBatch)
		if err != nil {
			return storage.Event{}, err
		}
		for i := range batch {
			e := &batch[i]
			ok, err := visible(e)
			if err != nil {
				return storage.Event{}, err
			}
			if ok {
				return *e, nil
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
	return storage.Event{}, spec.ErrNotFound.Withf("Unable to find event from %d in %s direction", ts, dir)
}

// nextToGap reports whether events this server lacks may lie on the searched side of e (see
// TimestampMatch).
func (s *Service) nextToGap(ctx context.Context, c storage.Conn, e storage.Event, forward bool) (bool, error) {
	if !forward {
		ext, err := c.ForwardExtremities(ctx, e.RoomID)
		if err != nil || !slices.Contains(ext, e.EventID) {
			return false, err
		}
		joined, err := serverHasMember(ctx, c, e.RoomID, s.opts.ServerName, MembershipJoin)
		return !joined, err
	}
	v, err := s.versionOf(ctx, c, e.RoomID)
	if err != nil {
		return false, err
	}
	p, err := event.Parse(v, e.PDU)
	if err != nil {
		return false, err
	}
	if len(p.PrevEvents) == 0 {
		return false, nil
	}
	metas, err := c.EventMetas(ctx, p.PrevEvents)
	if err != nil {
		return false, err
	}
	for _, id := range p.PrevEvents {
		if m, ok := metas[id]; !ok || m.Outlier {
			return true, nil
		}
	}
	return false, nil
}
