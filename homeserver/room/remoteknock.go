package room

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Knocks over federation ("Knocking upon a room"):
//
//	resident side:  MakeMembership builds the knock's template (make_knock); the knock signed by
//	                the knocking server comes back through send_knock, is received like any event
//	                (ReceivePDUs with Relay), and KnockRoomState is the answer.
//	knocking side:  federation/knock.go does the handshake; RecordRemoteMembership keeps the
//	                knock and the stripped state of the answer, so that /sync shows the room under
//	                rooms.knock. An invite that accepts the knock arrives like any invite; a
//	                leave that retracts it goes through make_leave/send_leave to one of
//	                RemoteRoomServers.

// KnockRoomState is knock_room_state of a send_knock answer: the room's stripped state events
// (create, join rules, name, avatar, topic, canonical alias, encryption), full events in their
// federation form, in stream order.
func (s *Service) KnockRoomState(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	c := s.store.Read()
	if _, err := s.versionOf(ctx, c, roomID); err != nil {
		return nil, err
	}
	evs, err := c.CurrentStateEvents(ctx, []string{roomID}, strippedStateTypes)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(evs, func(a, b storage.Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		if e.StateKey == nil || *e.StateKey != "" {
			continue
		}
		raw, err := s.FederationJSON(ctx, c, e)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// RemoteRoomServers are the servers that sent the state events this server holds of a room it is
// not in (the stripped state that came with an invite or a knock answer), latest event first:
// servers that were in the room then, to retract a knock through. Never this server.
func (s *Service) RemoteRoomServers(ctx context.Context, roomID string) ([]string, error) {
	evs, err := s.store.Read().CurrentStateEvents(ctx, []string{roomID}, strippedStateTypes)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(evs, func(a, b storage.Event) int { return cmp.Compare(b.OriginServerTS, a.OriginServerTS) })
	var out []string
	for _, e := range evs {
		if srv := serverOf(e.Sender); srv != "" && srv != s.opts.ServerName && !slices.Contains(out, srv) {
			out = append(out, srv)
		}
	}
	return out, nil
}
