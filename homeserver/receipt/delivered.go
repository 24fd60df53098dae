package receipt

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Delivery receipts, our extension: the "two grey ticks" of messengers. When a sync response first
// carries events of a room to one of a user's devices, the server records a receipt of type
// TypeDelivered on the newest of them (like m.read, a receipt covers the events before it). It
// reaches the room's members in sync as an ordinary m.receipt entry, so the sender sees that the
// message reached a device. Users opt in to sending them (they tell others when a device was
// online) with global account data OptInType = {"enabled": true}.
const (
	TypeDelivered = "dev.hearth.delivered"
	OptInType     = "dev.hearth.delivery_receipts"
)

// Delivered records that the events of a sync response reached a device of u: one receipt per room,
// on the newest event in it that u did not send. It does nothing unless u opted in.
func (s *Service) Delivered(ctx context.Context, u User, newest []storage.Event) error {
	if len(newest) == 0 {
		return nil
	}
	on, err := s.OptedIn(ctx, u.Localpart)
	if err != nil || !on {
		return err
	}
	return s.DeliveredOptedIn(ctx, u, newest)
}

// OptedIn reads whether the user opted in to sending delivery receipts.
func (s *Service) OptedIn(ctx context.Context, localpart string) (bool, error) {
	raw, err := s.store.Read().GetAccountData(ctx, localpart, "", OptInType)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return OptInEnabled(raw), nil
}

// OptInEnabled reads the content of OptInType account data.
func OptInEnabled(content json.RawMessage) bool {
	var opt struct {
		Enabled bool `json:"enabled"`
	}
	return json.Unmarshal(content, &opt) == nil && opt.Enabled
}

// DeliveredOptedIn is Delivered for a caller that knows u opted in.
func (s *Service) DeliveredOptedIn(ctx context.Context, u User, newest []storage.Event) error {
	if len(newest) == 0 {
		return nil
	}
	type announce struct {
		roomID string
		pos    int64
	}
	var done []announce
	ts := time.Now().UnixMilli()
	err := s.store.Write(ctx, func(c storage.Conn) error {
		done = nil
		for _, e := range newest {
			pos, err := c.PutReceipt(ctx, storage.Receipt{RoomID: e.RoomID, UserID: u.UserID, Type: TypeDelivered,
				EventID: e.EventID, EventPos: e.StreamPos, TS: ts})
			if err != nil {
				return err
			}
			if pos > 0 {
				done = append(done, announce{e.RoomID, pos})
			}
		}
		return nil
	})
	if err != nil || s.bus == nil {
		return err
	}
	for _, a := range done {
		s.publish(bus.SubjectReceipt, map[string]any{"room_id": a.roomID, "user_id": u.UserID, "private": false, "pos": a.pos})
	}
	return nil
}
