package room

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Queueing events for other servers. The writer decides where an event goes when it persists it
// and writes one federation_outbox row per destination in the same transaction; the federation
// sender (federation/sender.go) reads the rows, sends them and deletes them. An event can thus
// never be committed without being queued, nor queued without being committed.
//
// Destinations of an event of this server: the servers with joined members in the state after
// it, and for a membership event the target's server (an invitee's, a kicked or banned user's,
// one who left: they must learn of it although they have no joined member any more). Servers
// with no joined member get nothing else.

// serversOf lists the servers other than self with joined members in state, sorted.
func serversOf(state map[StateKeyTuple]*event.PDU, self string) []string {
	var out []string
	for k, ev := range state {
		if k.Type != TypeMember || Membership(ev) != MembershipJoin {
			continue
		}
		if srv := serverOf(k.StateKey); srv != "" && srv != self && !slices.Contains(out, srv) {
			out = append(out, srv)
		}
	}
	slices.Sort(out)
	return out
}

// destinations lists where an event goes: rs.servers (the room after the event) plus the target's
// server of a membership event, except the servers in exclude.
func (t *txn) destinations(rs *roomState, pdu *event.PDU, exclude ...string) []string {
	out := rs.servers
	if pdu.Type == TypeMember && pdu.StateKey != nil {
		if srv := serverOf(*pdu.StateKey); srv != "" && srv != t.s.opts.ServerName && !slices.Contains(out, srv) {
			out = append(slices.Clone(out), srv)
		}
	}
	if len(exclude) > 0 && len(out) > 0 {
		out = slices.DeleteFunc(slices.Clone(out), func(s string) bool { return slices.Contains(exclude, s) })
	}
	return out
}

// queueOutbound queues an event at stream position pos for the destinations.
func (t *txn) queueOutbound(dests []string, pdu *event.PDU, pos int64) error {
	if len(dests) == 0 {
		return nil
	}
	rows := make([]storage.OutboxRow, len(dests))
	for i, d := range dests {
		rows[i] = storage.OutboxRow{Destination: d, StreamPos: pos, EventID: pdu.EventID}
	}
	t.dests = append(t.dests, dests...)
	if t.rows != nil {
		t.rows.outbox = append(t.rows.outbox, rows...)
		return nil
	}
	return t.c.InsertOutbox(t.ctx, rows)
}

// publishOutbound wakes the federation sender of every node for the destinations queued to.
func (s *Service) publishOutbound(dests []string) {
	if s.bus == nil || len(dests) == 0 {
		return
	}
	slices.Sort(dests)
	dests = slices.Compact(dests)
	data, _ := json.Marshal(dests)
	if err := s.bus.Publish(bus.SubjectFederationOutbox, data); err != nil {
		s.log.Warn("publish federation outbox", "err", err)
	}
}

// ServersInRoom lists the servers with joined members in a room's current state, this one
// included if it has any, sorted.
func (s *Service) ServersInRoom(ctx context.Context, roomID string) ([]string, error) {
	ms, err := s.store.Read().RoomMembers(ctx, roomID, MembershipJoin)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if srv := serverOf(m.UserID); srv != "" && !slices.Contains(out, srv) {
			out = append(out, srv)
		}
	}
	slices.Sort(out)
	return out, nil
}
