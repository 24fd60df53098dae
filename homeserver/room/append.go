package room

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// maxPrevEvents caps prev_events of a new event (the spec allows 20).
const maxPrevEvents = 10

// appendOpts are the extras of one appended event.
type appendOpts struct {
	// Idempotency record committed with the event (none when txnID is empty): txn identifies the
	// client's txnID scoped to the request path (txnRefOf); txnID is what the sending device sees
	// in unsigned.transaction_id.
	txn              txnRef
	txnDevice, txnID string
}

// append builds the next event of the room from proto (room ID, prev events, depth, auth events
// and timestamp are filled in), authorises it against the room's current state, and persists it
// with its state group, current state, forward extremities and stream position.
func (t *txn) append(rs *roomState, proto event.Proto, o appendOpts) (*event.PDU, error) {
	pdu, err := t.prepare(rs, proto)
	if err != nil {
		return nil, err
	}
	return pdu, t.persist(rs, pdu, o)
}

// prepare builds the next event of the room from proto and authorises it against the room's
// current state, without storing it.
func (t *txn) prepare(rs *roomState, proto event.Proto) (*event.PDU, error) {
	v := rs.version
	if proto.Type == TypeCreate && v.RoomIDFromCreateEvent() {
		proto.RoomID = ""
	} else {
		proto.RoomID = rs.roomID
	}
	proto.PrevEvents = rs.extremities
	if len(proto.PrevEvents) > maxPrevEvents {
		proto.PrevEvents = proto.PrevEvents[:maxPrevEvents]
	}
	proto.Depth = rs.depth + 1
	proto.OriginServerTS = t.s.nowMS()
	draft := &event.PDU{Type: proto.Type, StateKey: proto.StateKey, Sender: proto.Sender, Content: proto.Content, Version: v}
	proto.AuthEvents = proto.AuthEvents[:0]
	for _, k := range AuthEventsNeeded(v, draft) {
		if ev := rs.state[k]; ev != nil {
			proto.AuthEvents = append(proto.AuthEvents, ev.EventID)
		}
	}
	pdu, err := t.s.build(v, proto)
	if err != nil {
		if errors.Is(err, event.ErrTooLarge) {
			return nil, spec.ErrTooLarge.With("The event is larger than the 65536 bytes the spec allows")
		}
		if errors.Is(err, event.ErrInvalid) {
			return nil, spec.ErrBadJSON.With(err.Error())
		}
		return nil, err
	}
	if rs.roomID == "" {
		rs.roomID = pdu.EffectiveRoomID()
	}
	if err := t.s.checker(v).Allowed(pdu, rs.lookup()); err != nil {
		var ae *AuthError
		if errors.As(err, &ae) {
			return nil, spec.ErrForbidden.With(ae.Reason)
		}
		return nil, err
	}
	return pdu, nil
}

// persist writes an authorised event and moves the room's state forward.
func (t *txn) persist(rs *roomState, pdu *event.PDU, o appendOpts) error {
	ctx, c := t.ctx, t.c
	if err := t.ensureGroup(rs); err != nil {
		return err
	}
	pos := t.pos.take()
	group := rs.group
	var err error
	var membership string
	if pdu.StateKey != nil {
		k := StateKeyTuple{pdu.Type, *pdu.StateKey}
		full := make(storage.StateMap, len(rs.state)+1)
		for sk, ev := range rs.state {
			full[storage.StateKey(sk)] = ev.EventID
		}
		full[storage.StateKey(k)] = pdu.EventID
		group, err = c.CreateStateGroup(ctx, rs.roomID, rs.group, storage.StateMap{storage.StateKey(k): pdu.EventID}, full)
		if err != nil {
			return err
		}
		if pdu.Type == TypeMember {
			membership = Membership(pdu)
		}
		if err := c.SetCurrentState(ctx, rs.roomID, storage.StateKey(k), pdu.EventID, membership, pos); err != nil {
			return err
		}
		rs.state[k] = pdu
		if pdu.Type == TypeMember && serverOf(k.StateKey) != t.s.opts.ServerName {
			rs.servers = serversOf(rs.state, t.s.opts.ServerName)
		}
	}
	rel := relationOf(pdu.Content)
	row := storage.Event{
		EventID: pdu.EventID, RoomID: rs.roomID, Type: pdu.Type, StateKey: pdu.StateKey, Sender: pdu.Sender,
		Depth: pdu.Depth, OriginServerTS: pdu.OriginServerTS, StreamPos: pos, StateGroup: group, Membership: membership,
		RelatesTo: rel.EventID, RelType: rel.RelType, RelKey: rel.Key, TxnID: o.txnID, TxnDevice: o.txnDevice,
		PDU: pdu.Raw, ClientJSON: pdu.ClientJSON(nil), PrevEvents: pdu.PrevEvents,
	}
	if t.rows != nil {
		if pdu.StateKey != nil {
			return fmt.Errorf("room: state event %s appended by a deferred job", pdu.Type)
		}
		t.rows.add(row)
	} else if err := c.InsertEvent(ctx, row); err != nil {
		return err
	}
	if o.txnID != "" {
		t.txns.add(txnEntry{ref: o.txn, eventID: pdu.EventID, ts: pdu.OriginServerTS})
	}
	rs.extremities = []string{pdu.EventID}
	rs.extremitiesDirty = true
	rs.depth = pdu.Depth
	rs.group = group
	t.notices = append(t.notices, notice{RoomID: rs.roomID, Pos: pos})
	return t.queueOutbound(t.destinations(rs, pdu), pdu, pos)
}

// ensureGroup gives the room's current state a state group when it has none (after forks were
// resolved at load), so that the next event can name the state after it.
func (t *txn) ensureGroup(rs *roomState) error {
	if rs.group != 0 || len(rs.state) == 0 {
		return nil
	}
	if t.pipelined {
		return errSerial
	}
	full := make(storage.StateMap, len(rs.state))
	for k, ev := range rs.state {
		full[storage.StateKey(k)] = ev.EventID
	}
	g, err := t.c.CreateStateGroup(t.ctx, rs.roomID, 0, full, full)
	if err != nil {
		return err
	}
	rs.group = g
	return nil
}

// relation is the m.relates_to of an event's content.
type relation struct {
	EventID string `json:"event_id"`
	RelType string `json:"rel_type"`
	Key     string `json:"key"`
}

func relationOf(content json.RawMessage) relation {
	// Most events relate to nothing: no parse when the key cannot be there (written with escapes,
	// "m.relates\u005fto", it has a backslash, which takes the parse).
	if !bytes.Contains(content, []byte("relates_to")) && bytes.IndexByte(content, '\\') < 0 {
		return relation{}
	}
	var c struct {
		RelatesTo *relation `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil {
		return relation{}
	}
	r := *c.RelatesTo
	if len(r.EventID) > 255 || len(r.RelType) > 255 || len(r.Key) > 255 {
		return relation{}
	}
	return r
}

// stateKeyPtr returns a pointer to a copy of s.
func stateKeyPtr(s string) *string { return &s }

func mustJSON(v any) json.RawMessage {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("room: marshal %T: %v", v, err))
	}
	return data
}

// build creates an event of this server. State events are signed now: auth rules check signatures
// of some of them (restricted joins), and they are few. Timeline events, the bulk of the write
// path, are stored unsigned and signed by SignPDU when they first leave the server: signing is
// most of the CPU cost of creating an event, and local rooms never need it.
func (s *Service) build(v event.Version, proto event.Proto) (*event.PDU, error) {
	key := s.opts.Key
	if proto.StateKey != nil {
		return event.Build(v, proto, s.opts.ServerName, key.ID, key.Private)
	}
	return event.BuildUnsigned(v, proto, s.opts.ServerName, key.ID)
}

// SignPDU returns the federation JSON of an event with this server's signature, signing it now if
// it was stored unsigned (see build). Everything that sends events to other servers goes through
// it.
func (s *Service) SignPDU(p *event.PDU) ([]byte, error) {
	key := s.opts.Key
	return event.SignPDU(p, s.opts.ServerName, key.ID, key.Private)
}
