// Package receipt stores read receipts and read markers (modules "Receipts" and "Read and unread
// markers"): m.read, m.read.private (only ever shown to its own user), threaded receipts, and the
// m.fully_read marker, which is room account data.
//
// A receipt is one row per (room, user, type, thread) that only moves forward, written at a new
// position of the receipts stream in one transaction; after commit the position is announced on
// the bus (hs.receipt) and the sync notifier wakes the room's members (or, for a private receipt,
// the user alone). /sync reads the rows changed after its token.
package receipt

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Receipt and marker types.
const (
	TypeRead        = "m.read"
	TypeReadPrivate = "m.read.private"
	TypeFullyRead   = "m.fully_read"
	// ThreadMain is the thread ID of the main timeline.
	ThreadMain = "main"
)

// Rooms is what the service asks the room service.
type Rooms interface {
	CurrentMembership(ctx context.Context, roomID, userID string) (string, error)
	LoadVisibility(ctx context.Context, userID, roomID string) (room.Visibility, error)
}

// Service writes receipts and read markers.
type Service struct {
	store *storage.Store
	bus   *bus.Bus
	rooms Rooms
	log   *slog.Logger
	fed   Federation // nil: no federation (remote.go)
}

// New builds the service (b may be nil: nothing is announced).
func New(store *storage.Store, b *bus.Bus, rooms Rooms, log *slog.Logger) *Service {
	return &Service{store: store, bus: b, rooms: rooms, log: log}
}

// User is the caller.
type User struct{ UserID, Localpart string }

// Mark is one receipt or marker to set: Type is m.read, m.read.private or m.fully_read; ThreadID
// nil is unthreaded.
type Mark struct {
	Type     string
	EventID  string
	ThreadID *string
}

// Post is POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (s *Service) Post(ctx context.Context, u User, roomID string, m Mark) error {
	return s.set(ctx, u, roomID, []Mark{m})
}

// ReadMarkers is POST /rooms/{roomId}/read_markers: any of the fully read marker, the m.read and
// the m.read.private receipt ("" leaves one alone), all or none of them.
func (s *Service) ReadMarkers(ctx context.Context, u User, roomID, fullyRead, read, readPrivate string) error {
	var ms []Mark
	for _, m := range []Mark{{Type: TypeFullyRead, EventID: fullyRead}, {Type: TypeRead, EventID: read},
		{Type: TypeReadPrivate, EventID: readPrivate}} {
		if m.EventID != "" {
			ms = append(ms, m)
		}
	}
	if len(ms) == 0 {
		return nil
	}
	return s.set(ctx, u, roomID, ms)
}

// set checks every mark, then writes them in one transaction and announces them.
func (s *Service) set(ctx context.Context, u User, roomID string, marks []Mark) error {
	for _, m := range marks {
		switch m.Type {
		case TypeRead, TypeReadPrivate:
		case TypeFullyRead:
			if m.ThreadID != nil {
				return spec.ErrInvalidParam.With("thread_id cannot be used with m.fully_read")
			}
		default:
			return spec.ErrInvalidParam.Withf("Unknown receipt type %q", m.Type)
		}
		if m.ThreadID != nil && *m.ThreadID == "" {
			return spec.ErrInvalidParam.With("thread_id field must be a non-empty string")
		}
	}
	membership, err := s.rooms.CurrentMembership(ctx, roomID, u.UserID)
	if err != nil {
		return err
	}
	if membership != room.MembershipJoin {
		return spec.ErrForbidden.With("You are not joined to this room")
	}
	var vis *room.Visibility
	evs := make([]storage.Event, len(marks))
	for i, m := range marks {
		e, err := s.store.Read().Event(ctx, m.EventID)
		if errors.Is(err, storage.ErrNotFound) || err == nil && (e.RoomID != roomID || e.StreamPos == 0 || e.Rejected) {
			return spec.ErrNotFound.With("Event not found")
		}
		if err != nil {
			return err
		}
		if vis == nil {
			v, err := s.rooms.LoadVisibility(ctx, u.UserID, roomID)
			if err != nil {
				return err
			}
			vis = &v
		}
		if !vis.CanSee(&e) {
			return spec.ErrNotFound.With("Event not found")
		}
		if m.ThreadID != nil && !inThread(&e, *m.ThreadID) {
			return spec.ErrInvalidParam.With("The event is not in that thread")
		}
		evs[i] = e
	}

	type announce struct {
		private bool
		pos     int64
		mark    int // index in marks
	}
	var receipts []announce
	var dataPos int64
	ts := time.Now().UnixMilli()
	err = s.store.Write(ctx, func(c storage.Conn) error {
		receipts, dataPos = nil, 0
		for i, m := range marks {
			if m.Type == TypeFullyRead {
				content, _ := json.Marshal(map[string]string{"event_id": m.EventID})
				pos, err := c.PutAccountData(ctx, u.Localpart, roomID, TypeFullyRead, content)
				if err != nil {
					return err
				}
				dataPos = pos
				continue
			}
			r := storage.Receipt{RoomID: roomID, UserID: u.UserID, Type: m.Type, EventID: m.EventID,
				EventPos: evs[i].StreamPos, TS: ts}
			if m.ThreadID != nil {
				r.ThreadID = *m.ThreadID
			}
			pos, err := c.PutReceipt(ctx, r)
			if err != nil {
				return err
			}
			if pos > 0 {
				receipts = append(receipts, announce{private: m.Type == TypeReadPrivate, pos: pos, mark: i})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s.fed != nil {
		for _, a := range receipts {
			if m := marks[a.mark]; m.Type == TypeRead {
				s.tellFederation(ctx, roomID, u.UserID, m, ts)
			}
		}
	}
	if s.bus == nil {
		return nil
	}
	if dataPos > 0 {
		s.publish(bus.SubjectAccountData, map[string]any{"user_id": u.UserID, "pos": dataPos})
	}
	for _, a := range receipts {
		s.publish(bus.SubjectReceipt, map[string]any{"room_id": roomID, "user_id": u.UserID, "private": a.private, "pos": a.pos})
	}
	return nil
}

func (s *Service) publish(subject string, msg any) {
	data, _ := json.Marshal(msg)
	if err := s.bus.Publish(subject, data); err != nil {
		s.log.Warn("receipt: publish", "subject", subject, "err", err)
	}
}

// inThread reports whether an event belongs to a thread: "main" holds the events that are not in a
// thread (thread roots included); a thread root's ID holds the root and the events relating to it
// with rel_type m.thread.
func inThread(e *storage.Event, threadID string) bool {
	inSome := e.RelType == "m.thread"
	if threadID == ThreadMain {
		return !inSome
	}
	return e.EventID == threadID || inSome && e.RelatesTo == threadID
}

// Events turns receipt rows into one m.receipt ephemeral event per room, in the spec's content
// shape {eventId: {receiptType: {userId: {ts, thread_id?}}}}.
func Events(rs []storage.Receipt) map[string]json.RawMessage {
	type entry struct {
		TS       int64  `json:"ts"`
		ThreadID string `json:"thread_id,omitempty"`
	}
	byRoom := map[string]map[string]map[string]map[string]entry{}
	for _, r := range rs {
		content := byRoom[r.RoomID]
		if content == nil {
			content = map[string]map[string]map[string]entry{}
			byRoom[r.RoomID] = content
		}
		types := content[r.EventID]
		if types == nil {
			types = map[string]map[string]entry{}
			content[r.EventID] = types
		}
		users := types[r.Type]
		if users == nil {
			users = map[string]entry{}
			types[r.Type] = users
		}
		// A user may have a receipt of the same type on this event for several threads; the
		// event's content holds one per user, the latest (rows come in position order).
		users[r.UserID] = entry{TS: r.TS, ThreadID: r.ThreadID}
	}
	out := make(map[string]json.RawMessage, len(byRoom))
	for id, content := range byRoom {
		out[id], _ = json.Marshal(map[string]any{"type": "m.receipt", "content": content})
	}
	return out
}
