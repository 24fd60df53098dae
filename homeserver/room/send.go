package room

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Sender identifies who sends an event: the user, and the device and transaction ID for
// idempotency (empty txnID: none).
type Sender struct {
	UserID    string
	Localpart string
	DeviceID  string
	TxnID     string
}

// Send appends a message-like (non-state) event. A repeated (user, device, txnID) returns the
// event of the first call: the mapping is committed with the event, so it survives a crash.
func (s *Service) Send(ctx context.Context, roomID string, from Sender, typ string, content json.RawMessage) (string, error) {
	return s.appendOne(ctx, roomID, from, event.Proto{Sender: from.UserID, Type: typ, Content: content}, "send", roomID, typ)
}

// SetState appends a state event.
func (s *Service) SetState(ctx context.Context, roomID string, from Sender, typ, stateKey string, content json.RawMessage) (string, error) {
	return s.appendOne(ctx, roomID, from, event.Proto{Sender: from.UserID, Type: typ, StateKey: &stateKey, Content: content})
}

// Redact appends an m.room.redaction of target, and applies it to the stored event when the
// sender may redact it (their own event, or with the redact power level).
func (s *Service) Redact(ctx context.Context, roomID string, from Sender, target string, reason string) (string, error) {
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	var id string
	err := s.write(ctx, func(t *txn) error {
		o, prev := t.transaction(from, "redact", roomID, target)
		if prev != "" {
			id = prev
			return nil
		}
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		if err := t.mayRedact(rs, from.UserID, target); err != nil {
			return err
		}
		pdu, err := t.append(rs, event.Proto{Sender: from.UserID, Type: TypeRedaction, Content: mustJSON(content), Redacts: target}, o)
		if err != nil {
			return err
		}
		id = pdu.EventID
		return t.applyRedaction(rs, pdu, target)
	})
	return id, err
}

// mayRedact is the client-server rule for PUT /redact: users may redact their own events, and
// need the room's redact power level for anyone else's.
func (t *txn) mayRedact(rs *roomState, user, target string) error {
	e, err := t.c.Event(t.ctx, target)
	if errors.Is(err, storage.ErrNotFound) || err == nil && e.RoomID != rs.roomID {
		return spec.ErrNotFound.With("Event not found")
	}
	if err != nil {
		return err
	}
	if e.Sender == user {
		return nil
	}
	pl, err := NewPowerLevels(rs.version, rs.state[StateKeyTuple{TypeCreate, ""}], rs.state[StateKeyTuple{TypePowerLevels, ""}])
	if err != nil {
		return err
	}
	if pl.UserLevel(user) < pl.Redact {
		return spec.ErrForbidden.With("You need the redact power level to redact other users' events")
	}
	return nil
}

// applyRedaction replaces the stored target with its redacted form when the redaction is allowed
// to take effect (same room; the redaction's sender sent the target or has the redact level).
func (t *txn) applyRedaction(rs *roomState, redaction *event.PDU, targetID string) error {
	target, err := t.c.Event(t.ctx, targetID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil // the target may arrive later (federation); nothing to redact now
	}
	if err != nil {
		return err
	}
	if target.RoomID != rs.roomID || target.RedactedBy != "" {
		return nil
	}
	orig, err := event.Parse(rs.version, target.PDU)
	if err != nil {
		return err
	}
	pl, err := NewPowerLevels(rs.version, rs.state[StateKeyTuple{TypeCreate, ""}], rs.state[StateKeyTuple{TypePowerLevels, ""}])
	if err != nil {
		return err
	}
	if !RedactionApplies(rs.version, redaction, orig, pl) {
		return spec.ErrForbidden.With("You may not redact this event")
	}
	red, err := orig.Redacted()
	if err != nil {
		return err
	}
	return t.c.SetRedactedBy(t.ctx, targetID, redaction.EventID, red.Raw, red.ClientJSON(nil))
}

// appendOne appends one event. With a txnScope and a transaction ID, a repeat of the same
// (user, device, scope, txnID) returns the first event: the spec makes a transaction ID unique per
// device and request path, so the scope holds the path's room and event type.
func (s *Service) appendOne(ctx context.Context, roomID string, from Sender, proto event.Proto, txnScope ...string) (string, error) {
	var id string
	write := s.write
	var ref txnRef // the transaction ID scoped to the request, computed once
	withTxn := len(txnScope) > 0 && from.TxnID != ""
	if withTxn {
		ref = txnRefOf(from.UserID, from.DeviceID, from.TxnID, txnScope...)
	}
	if proto.StateKey == nil && proto.Type != TypeRedaction && relationOf(proto.Content).EventID == "" {
		// A plain timeline event: nothing later in the job reads what it stores.
		write = s.writeDeferred
	}
	err := write(ctx, func(t *txn) error {
		o := appendOpts{}
		if withTxn {
			var prev string
			if o, prev = t.transactionRef(from, ref); prev != "" {
				id = prev
				return nil
			}
		}
		rs, err := t.room(roomID)
		if err != nil {
			return err
		}
		if err := t.checkRelation(rs, proto); err != nil {
			return err
		}
		pdu, err := t.append(rs, proto, o)
		if err != nil {
			return err
		}
		id = pdu.EventID
		return nil
	})
	return id, err
}

// Membership changes target's membership in a room: join (target == sender), leave, invite, kick
// (leave of another user), ban, unban (leave of a banned user), knock. The auth rules decide
// whether it is allowed.
func (s *Service) Membership(ctx context.Context, roomID string, from Sender, target, membership, reason string, profile MemberProfile, isDirect bool) (string, error) {
	content := newMemberContent(membership, profile, isDirect)
	if reason != "" {
		content["reason"] = reason
	}
	return s.appendOne(ctx, roomID, from, event.Proto{Sender: from.UserID, Type: TypeMember, StateKey: &target, Content: mustJSON(content)})
}

// RoomVersion returns the version of a room this server knows.
func (s *Service) RoomVersion(ctx context.Context, roomID string) (event.Version, error) {
	r, err := s.store.Read().Room(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return event.Version{}, errRoomNotFound
	}
	if err != nil {
		return event.Version{}, err
	}
	return event.LookupVersion(r.Version)
}

// CurrentMembership is a user's current membership in a room ("" if none).
func (s *Service) CurrentMembership(ctx context.Context, roomID, userID string) (string, error) {
	id, err := s.store.Read().CurrentStateEvent(ctx, roomID, TypeMember, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	e, err := s.store.Read().Event(ctx, id)
	return e.Membership, err
}

// ResolveAlias maps a local alias to its room and creator; M_NOT_FOUND if unknown.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error) {
	roomID, creator, err = s.store.Read().Alias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", spec.ErrNotFound.With("Room alias not found")
	}
	return roomID, creator, err
}

// transaction prepares the idempotency record of a request scoped by scope (the request path's
// parts) and returns the event an earlier request with the same transaction ID produced, if any
// (txnindex.go). Without a transaction ID there is nothing to record.
func (t *txn) transaction(from Sender, scope ...string) (appendOpts, string) {
	if from.TxnID == "" {
		return appendOpts{}, ""
	}
	return t.transactionRef(from, txnRefOf(from.UserID, from.DeviceID, from.TxnID, scope...))
}

// transactionRef is transaction for a scoped transaction ID already made by txnRefOf.
func (t *txn) transactionRef(from Sender, ref txnRef) (appendOpts, string) {
	return appendOpts{txn: ref, txnDevice: from.DeviceID, txnID: from.TxnID}, t.lookupTxn(ref)
}
