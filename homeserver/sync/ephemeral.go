package sync

import (
	"context"
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/receipt"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// ephemeral sets the ephemeral events of the joined rooms: m.typing when a room's typing list
// changed after the token, m.receipt with the receipts changed after it (the user's own private
// receipts included, nobody else's). Rooms the client gets from scratch (initial sync, newly
// joined) get the current typing list and all current receipts. It returns the receipts part of
// the next token: to.Receipts, moved up to any newer receipt read.
func (s *Service) ephemeral(ctx context.Context, c storage.Conn, req Request, p *plan, jobs []*roomJob, from, to Token) (int64, error) {
	var fresh, continuing []string
	byRoom := map[string]*roomJob{}
	for _, j := range jobs {
		if j.leave || !p.ephemeral.room(j.m.RoomID) {
			continue
		}
		byRoom[j.m.RoomID] = j
		if j.from == 0 {
			fresh = append(fresh, j.m.RoomID)
		} else {
			continuing = append(continuing, j.m.RoomID)
		}
	}
	if len(byRoom) == 0 {
		return to.Receipts, nil
	}
	if s.eph.Typing != nil && p.ephemeral.typ("m.typing") {
		for _, set := range []struct {
			rooms []string
			since int64
		}{{fresh, 0}, {continuing, from.Typing}} {
			for roomID, users := range s.eph.Typing.Changed(set.rooms, set.since) {
				ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
				byRoom[roomID].ephemeral = append(byRoom[roomID].ephemeral, ev)
			}
		}
	}
	rcPos := to.Receipts
	if !p.ephemeral.typ("m.receipt") {
		return rcPos, nil
	}
	var rs []storage.Receipt
	if len(fresh) > 0 && rcPos > 0 {
		got, err := c.ReceiptsSince(ctx, fresh, 0, req.UserID)
		if err != nil {
			return 0, err
		}
		rs = append(rs, got...)
	}
	if len(continuing) > 0 && rcPos > from.Receipts {
		got, err := c.ReceiptsSince(ctx, continuing, from.Receipts, req.UserID)
		if err != nil {
			return 0, err
		}
		rs = append(rs, got...)
	}
	for _, r := range rs {
		rcPos = max(rcPos, r.StreamPos)
	}
	if len(rs) == 0 {
		return rcPos, nil
	}
	for roomID, ev := range receipt.Events(rs) {
		byRoom[roomID].ephemeral = append(byRoom[roomID].ephemeral, ev)
	}
	return rcPos, nil
}

// fillPresence sets the presence section: the users sharing a room with the user whose presence
// changed after the token.
//
// ms are the user's memberships, current at position to.Events: who shares a room with the user
// comes from the notifier's room index when it is as current.
func (s *Service) fillPresence(ctx context.Context, req Request, p *plan, from, to Token, ms []storage.Membership, resp *Response) error {
	if s.eph.Presence == nil || !p.presence.typ("m.presence") {
		return nil
	}
	var joined []string
	for _, m := range ms {
		if m.Membership == room.MembershipJoin {
			joined = append(joined, m.RoomID)
		}
	}
	evs, err := s.eph.Presence.Changed(ctx, req.UserID, from.Presence, to.Presence, func(users []string) (map[string]bool, bool) {
		return s.notifier.JoinedAmong(joined, users, to.Events)
	})
	if err != nil {
		return err
	}
	for _, e := range evs {
		if p.presence.sender(e.Sender) {
			raw, _ := json.Marshal(e)
			resp.Presence.Events = append(resp.Presence.Events, raw)
		}
	}
	return nil
}
