package room

import (
	"context"
	"errors"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Forget is POST /rooms/{roomId}/forget: the user, who has left or was banned, stops remembering
// the room. It is recorded against their current membership event, so the room comes back when
// that membership changes (a new invite or join). A room the user never had a membership in has
// nothing to forget.
func (s *Service) Forget(ctx context.Context, roomID, userID string) error {
	defer s.forgets.Add(1) // after the commit (and after a failure: a spurious count costs a read)
	return s.write(ctx, func(t *txn) error {
		id, err := t.c.CurrentStateEvent(t.ctx, roomID, TypeMember, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		e, err := t.c.Event(t.ctx, id)
		if err != nil {
			return err
		}
		if e.Membership != MembershipLeave && e.Membership != MembershipBan {
			return spec.ErrUnknown.Withf("User %s is in room %s", userID, roomID).WithStatus(400)
		}
		return t.c.ForgetRoom(t.ctx, userID, roomID, id)
	})
}

// Forgets counts the forgets of this node so far: lists of a user's rooms kept in memory (sync)
// taken before a forget are not used after it.
func (s *Service) Forgets() int64 { return s.forgets.Load() }

// Forgotten reports whether the user forgot the room at their current membership (lists of the
// user's rooms, such as /sync's left rooms, leave such rooms out).
func (s *Service) Forgotten(ctx context.Context, roomID, userID string) (bool, error) {
	return s.store.Read().RoomForgotten(ctx, userID, roomID)
}

// RememberedRooms lists the rooms where the user's current membership is one of memberships,
// without those they forgot.
func (s *Service) RememberedRooms(ctx context.Context, userID string, memberships ...string) ([]string, error) {
	ms, err := s.store.Read().RememberedRoomsOfUser(ctx, userID, memberships...)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.RoomID
	}
	return out, nil
}
