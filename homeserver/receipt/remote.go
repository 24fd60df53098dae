package receipt

import (
	"context"
	"errors"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Receipts across servers (server-server API "Receipts"): a public m.read receipt of a local user
// that moved forward is handed to Federation after commit (an m.receipt EDU to the room's other
// servers); m.read.private stays here, and so do delivery receipts (our extension, which other
// servers would not understand). An m.read receipt of another server's user arrives through
// Remote and is stored like a local one, so local members see it in /sync.

// Federation is told about this server's users' public read receipts.
type Federation interface {
	Receipt(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error
}

// SetFederation sets who is told about public read receipts. Call it before serving.
func (s *Service) SetFederation(f Federation) { s.fed = f }

func (s *Service) tellFederation(ctx context.Context, roomID, userID string, m Mark, ts int64) {
	thread := ""
	if m.ThreadID != nil {
		thread = *m.ThreadID
	}
	// The receipt is committed: queue it even if the client has gone meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.fed.Receipt(ctx, roomID, userID, m.EventID, thread, ts); err != nil {
		s.log.Warn("receipt: federation", "room_id", roomID, "user_id", userID, "err", err)
	}
}

// Remote stores the m.read receipt of a user of another server, from an m.receipt EDU (the caller
// checked that the user belongs to the server that sent it, and the room's ACL). The user must be
// joined to the room (M_FORBIDDEN); the event must be one of the room's timeline that this
// server has (M_NOT_FOUND: the receipt is not stored, since unread counts and the forward-only
// rule need the event's position); threadID "" is unthreaded, otherwise the event must be in
// that thread (M_INVALID_PARAM). ts is when the user read it, in the future or absent: now.
// Like local receipts, it only moves forward; stored reports whether it did.
func (s *Service) Remote(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) (stored bool, err error) {
	membership, err := s.rooms.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return false, err
	}
	if membership != room.MembershipJoin {
		return false, spec.ErrForbidden.With("The user is not joined to this room")
	}
	e, err := s.store.Read().Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (e.RoomID != roomID || e.StreamPos == 0 || e.Rejected) {
		return false, spec.ErrNotFound.With("Event not found")
	}
	if err != nil {
		return false, err
	}
	if threadID != "" && !inThread(&e, threadID) {
		return false, spec.ErrInvalidParam.With("The event is not in that thread")
	}
	if now := time.Now().UnixMilli(); ts <= 0 || ts > now {
		ts = now
	}
	var pos int64
	err = s.store.Write(ctx, func(c storage.Conn) error {
		var err error
		pos, err = c.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: TypeRead, ThreadID: threadID,
			EventID: eventID, EventPos: e.StreamPos, TS: ts})
		return err
	})
	if err != nil || pos == 0 {
		return false, err
	}
	if s.bus != nil {
		s.publish(bus.SubjectReceipt, map[string]any{"room_id": roomID, "user_id": userID, "private": false, "pos": pos})
	}
	return true, nil
}
