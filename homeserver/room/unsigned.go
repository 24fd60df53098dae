package room

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// clientEvents turns stored events into client events: the stored client bytes with the
// per-request unsigned spliced in (age, transaction_id for the sending device, redacted_because,
// bundled m.relations), without decoding the events.
func (s *Service) clientEvents(ctx context.Context, c storage.Conn, r Reader, evs []storage.Event) ([]json.RawMessage, error) {
	return s.clientEventsAt(ctx, c, r, evs, 0)
}

// clientEventsAt is clientEvents; upTo > 0 shares the relation read (ClientEventsUpTo).
func (s *Service) clientEventsAt(ctx context.Context, c storage.Conn, r Reader, evs []storage.Event, upTo int64) ([]json.RawMessage, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(evs))
	var redactions []string
	for i, e := range evs {
		ids[i] = e.EventID
		if e.RedactedBy != "" {
			redactions = append(redactions, e.RedactedBy)
		}
	}
	because := map[string]json.RawMessage{}
	if len(redactions) > 0 {
		reds, err := c.Events(ctx, redactions)
		if err != nil {
			return nil, err
		}
		for _, red := range reds {
			because[red.EventID] = red.ClientJSON
		}
	}
	bundles, err := s.bundledRelations(ctx, c, r, evs, upTo)
	if err != nil {
		return nil, err
	}
	now := s.nowMS()
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		u := make([]byte, 0, 64)
		u = append(u, `{"age":`...)
		u = strconv.AppendInt(u, max(now-e.OriginServerTS, 0), 10)
		if b, ok := bundles[e.EventID]; ok {
			u = append(u, `,"m.relations":`...)
			u = append(u, b...)
		}
		if red, ok := because[e.RedactedBy]; ok {
			u = append(u, `,"redacted_because":`...)
			u = append(u, red...)
		}
		if e.TxnID != "" && e.Sender == r.UserID && e.TxnDevice == r.DeviceID {
			u = append(u, `,"transaction_id":`...)
			q, _ := json.Marshal(e.TxnID)
			u = append(u, q...)
		}
		u = append(u, '}')
		out[i] = event.SpliceUnsigned(nil, e.ClientJSON, u)
	}
	return out, nil
}
