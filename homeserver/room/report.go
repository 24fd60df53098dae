package room

import (
	"context"
	"errors"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Reporting content (module "Reporting content"): a local user reports an event, a room or a user
// to this server's admins. A report is stored (the admin API lists event reports) and logged.

// maxReasonBytes bounds a report's reason.
const maxReasonBytes = 4096

var errReasonTooLong = spec.ErrInvalidParam.Withf("The reason must be at most %d bytes long", maxReasonBytes)

// ReportEvent is POST /rooms/{roomId}/report/{eventId}: the reporter must be joined to the room and
// able to see the event, otherwise M_NOT_FOUND.
func (s *Service) ReportEvent(ctx context.Context, reporter, roomID, eventID, reason string) error {
	if len(reason) > maxReasonBytes {
		return errReasonTooLong
	}
	notFound := spec.ErrNotFound.With("The event was not found, or you are not joined to its room")
	if m, err := s.CurrentMembership(ctx, roomID, reporter); err != nil {
		return err
	} else if m != MembershipJoin {
		return notFound
	}
	if _, err := s.Event(ctx, Reader{UserID: reporter}, roomID, eventID); err != nil {
		if errors.Is(err, spec.ErrNotFound) {
			return notFound
		}
		return err
	}
	e, err := s.store.Read().Event(ctx, eventID)
	if err != nil {
		return err
	}
	return s.report(ctx, storage.Report{Kind: storage.ReportEvent, Reporter: reporter, RoomID: roomID, EventID: eventID,
		UserID: e.Sender, Reason: reason})
}

// ReportRoom is POST /rooms/{roomId}/report: any room this server knows, joined or not.
func (s *Service) ReportRoom(ctx context.Context, reporter, roomID, reason string) error {
	if len(reason) > maxReasonBytes {
		return errReasonTooLong
	}
	if _, err := s.store.Read().Room(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return spec.ErrNotFound.With("Room not found")
	} else if err != nil {
		return err
	}
	return s.report(ctx, storage.Report{Kind: storage.ReportRoom, Reporter: reporter, RoomID: roomID, Reason: reason})
}

// ReportUser is POST /users/{userId}/report: a local user with an account, or a user of another
// server that has been a member of a room here.
func (s *Service) ReportUser(ctx context.Context, reporter, userID, reason string) error {
	if len(reason) > maxReasonBytes {
		return errReasonTooLong
	}
	u, err := spec.ParseUserID(userID)
	if err != nil {
		return spec.ErrInvalidParam.Withf("%q is not a user ID", userID)
	}
	c := s.store.Read()
	known := false
	if u.ServerName() == s.opts.ServerName {
		known, err = c.AccountExists(ctx, u.Localpart())
	} else {
		var ms []storage.Membership
		ms, err = c.RoomsOfUser(ctx, userID, MembershipJoin, MembershipInvite, MembershipLeave, MembershipBan, MembershipKnock)
		known = len(ms) > 0
	}
	if err != nil {
		return err
	}
	if !known {
		return spec.ErrNotFound.With("User not found")
	}
	return s.report(ctx, storage.Report{Kind: storage.ReportUser, Reporter: reporter, UserID: userID, Reason: reason})
}

// report stores r and logs it for the admins.
func (s *Service) report(ctx context.Context, r storage.Report) error {
	r.ReceivedTS = s.nowMS()
	var id int64
	err := s.store.Write(ctx, func(c storage.Conn) error {
		var err error
		id, err = c.InsertReport(ctx, r)
		return err
	})
	if err != nil {
		return err
	}
	s.log.Info("content reported", "report_id", id, "kind", r.Kind, "reporter", r.Reporter, "room_id", r.RoomID,
		"event_id", r.EventID, "user_id", r.UserID, "reason", r.Reason)
	return nil
}

// EventReports lists up to limit event reports, newest first, after skipping offset of them, and
// how many there are (the admin API).
func (s *Service) EventReports(ctx context.Context, offset, limit int) ([]storage.Report, int64, error) {
	return s.store.Read().Reports(ctx, storage.ReportEvent, offset, limit)
}

// EventReport reads one event report; M_NOT_FOUND if there is none with that ID.
func (s *Service) EventReport(ctx context.Context, id int64) (storage.Report, error) {
	r, err := s.store.Read().Report(ctx, id)
	if errors.Is(err, storage.ErrNotFound) || err == nil && r.Kind != storage.ReportEvent {
		return r, spec.ErrNotFound.With("Event report not found")
	}
	return r, err
}

// DeleteEventReport removes an event report; M_NOT_FOUND if there is none with that ID.
func (s *Service) DeleteEventReport(ctx context.Context, id int64) error {
	if _, err := s.EventReport(ctx, id); err != nil {
		return err
	}
	return s.store.Write(ctx, func(c storage.Conn) error { return c.DeleteReport(ctx, id) })
}
