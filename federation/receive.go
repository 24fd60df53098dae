package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"sync"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The PDU pipeline (server-server API, "Checks performed on receipt of a PDU"), the steps that
// need no room state, then the room service's writer for the rest:
//
//	1. format and size (event.Parse, with the version of the room, which must be known here)
//	2. signatures (event.VerifyEventSignatures, keys from the key ring): dropped otherwise
//	3. content hash: redacted otherwise, and processed further
//	   ── room.Service.ReceivePDUs: 4. auth events, 5. state before, 6. current state (soft fail)
//
// When the room service reports missing events, they are fetched from the server that sent the
// event: its auth chain with /event_auth (stored as outliers); its missing prev events with
// /get_missing_events (the gap between our forward extremities and it, processed oldest first);
// and if prev events are still missing, the state before the event with /state_ids (and /event
// or /state for the events of it we lack), with which the event is accepted as a new forward
// extremity, its missing ancestors left as a gap (backfill can fill it later).

// Limits of the gap filling for one received event.
const (
	maxMissingEvents = 20 // /get_missing_events limit
	maxFetchEvents   = 50 // events fetched one by one with /event before asking /state instead
	// maxGapsPerTxn bounds the events of one transaction whose missing events are fetched (each
	// may cost several requests to the origin); the others are answered with the error.
	maxGapsPerTxn = 5
)

var errUnknownRoom = errors.New("unknown room")

// checked is a received PDU after steps 1 to 3.
type checked struct {
	pdu    *event.PDU
	roomID string
	err    error
}

// roomVersion is the version of a room this server knows (cached: versions never change).
func (a *API) roomVersion(ctx context.Context, roomID string) (event.Version, error) {
	if v, ok := a.versions.Load(roomID); ok {
		return v.(event.Version), nil
	}
	v, err := a.rooms.RoomVersion(ctx, roomID)
	if errors.Is(err, spec.ErrNotFound) {
		return v, errUnknownRoom
	}
	if err != nil {
		return v, err
	}
	a.versions.Store(roomID, v)
	return v, nil
}

// checkPDUs runs steps 1 to 3 on raw PDUs, in parallel (signature checks are most of the CPU).
// Those of unknown rooms fail with errUnknownRoom.
func (a *API) checkPDUs(ctx context.Context, raws []json.RawMessage) []checked {
	out := make([]checked, len(raws))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, raw := range raws {
		var head struct {
			RoomID string `json:"room_id"`
		}
		if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
			out[i].err = fmt.Errorf("%w: not an event with a room_id", event.ErrInvalid)
			continue
		}
		out[i].roomID = head.RoomID
		v, err := a.roomVersion(ctx, head.RoomID)
		if err != nil {
			out[i].err = err
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i].pdu, out[i].err = a.checkPDU(ctx, v, raw)
		}()
	}
	wg.Wait()
	return out
}

// checkPDU is steps 1 to 3 for an event of a room of version v.
func (a *API) checkPDU(ctx context.Context, v event.Version, raw []byte) (*event.PDU, error) {
	p, err := event.Parse(v, raw)
	if err != nil {
		return nil, err
	}
	if p, err = p.WithoutUnsigned(); err != nil {
		return nil, err
	}
	if err := event.VerifyEventSignatures(ctx, v, p, a.keys.Key); err != nil {
		return p, err
	}
	if p.CheckContentHash() != nil {
		a.log.Info("federation: event content hash mismatch, redacting it", "event_id", p.EventID, "sender", p.Sender)
		return p.Redacted()
	}
	return p, nil
}

// receivePDUs runs the pipeline on the checked PDUs of one room sent by origin, in depth order,
// and returns the outcome of each, by event ID.
func (a *API) receivePDUs(ctx context.Context, origin, roomID string, v event.Version, pdus []*event.PDU) (map[string]error, error) {
	slices.SortStableFunc(pdus, func(x, y *event.PDU) int {
		switch {
		case x.Depth < y.Depth:
			return -1
		case x.Depth > y.Depth:
			return 1
		}
		return 0
	})
	in := make([]room.Incoming, len(pdus))
	for i, p := range pdus {
		in[i] = room.Incoming{PDU: p}
	}
	outs, err := a.rooms.ReceivePDUs(ctx, roomID, in)
	if err != nil {
		return nil, err
	}
	res := make(map[string]error, len(pdus))
	gaps := 0
	for i := range outs {
		if !isMissing(outs[i].Err) || gaps >= maxGapsPerTxn {
			continue
		}
		gaps++
		if outs[i], err = a.receiveWithGap(ctx, origin, roomID, v, pdus[i], true); err != nil {
			return nil, err
		}
		// Later events that were missing something may have been missing this one: try them
		// again (one writer job), and fetch only what is still missing then.
		var rest []int
		var again []room.Incoming
		for j := i + 1; j < len(outs); j++ {
			if isMissing(outs[j].Err) {
				rest = append(rest, j)
				again = append(again, room.Incoming{PDU: pdus[j]})
			}
		}
		if len(again) > 0 {
			retried, err := a.rooms.ReceivePDUs(ctx, roomID, again)
			if err != nil {
				return nil, err
			}
			for k, j := range rest {
				outs[j] = retried[k]
			}
		}
	}
	for _, o := range outs {
		res[o.EventID] = o.Err
	}
	return res, nil
}

func isMissing(err error) bool {
	return errors.Is(err, room.ErrMissingAuthEvents) || errors.Is(err, room.ErrMissingPrevEvents)
}

// receiveWithGap receives an event whose auth or prev events are missing: it fetches them from
// origin (withGap: prev events through /get_missing_events first), and else the state before the
// event.
func (a *API) receiveWithGap(ctx context.Context, origin, roomID string, v event.Version, p *event.PDU, withGap bool) (room.Outcome, error) {
	try := func(stateBefore storage.StateMap) (room.Outcome, error) {
		outs, err := a.rooms.ReceivePDUs(ctx, roomID, []room.Incoming{{PDU: p, StateBefore: stateBefore}})
		if err != nil {
			return room.Outcome{}, err
		}
		return outs[0], nil
	}
	o, err := try(nil)
	if err != nil || !isMissing(o.Err) {
		return o, err
	}
	if errors.Is(o.Err, room.ErrMissingAuthEvents) {
		if err := a.fetchAuthChain(ctx, origin, roomID, v, p.EventID); err != nil {
			a.log.Info("federation: fetching auth events failed", "event_id", p.EventID, "origin", origin, "err", err)
		}
		if o, err = try(nil); err != nil || !isMissing(o.Err) {
			return o, err
		}
	}
	if errors.Is(o.Err, room.ErrMissingPrevEvents) && withGap {
		if err := a.fillGap(ctx, origin, roomID, v, p); err != nil {
			a.log.Info("federation: fetching missing events failed", "event_id", p.EventID, "origin", origin, "err", err)
		}
		if o, err = try(nil); err != nil || !isMissing(o.Err) {
			return o, err
		}
	}
	// Still missing: take the state before the event from origin.
	state, err := a.fetchStateBefore(ctx, origin, roomID, v, p.EventID)
	if err != nil {
		a.log.Info("federation: fetching the state before an event failed", "event_id", p.EventID, "origin", origin, "err", err)
		o.Err = fmt.Errorf("%w (and the state before it could not be fetched from %s)", o.Err, origin)
		return o, nil
	}
	return try(state)
}

// fillGap asks origin for the events between our forward extremities and p, and receives them
// oldest first (each may in turn need its auth chain or the state before it, but no further gap
// filling).
func (a *API) fillGap(ctx context.Context, origin, roomID string, v event.Version, p *event.PDU) error {
	earliest, err := a.store.Read().ForwardExtremities(ctx, roomID)
	if err != nil {
		return err
	}
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	body := map[string]any{"earliest_events": earliest, "latest_events": []string{p.EventID}, "limit": maxMissingEvents, "min_depth": 0}
	if err := a.client.DoJSON(ctx, origin, "POST", "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(roomID), body, &resp); err != nil {
		return err
	}
	if len(resp.Events) > maxMissingEvents {
		resp.Events = resp.Events[:maxMissingEvents]
	}
	var got []*event.PDU
	for _, c := range a.checkPDUs(ctx, resp.Events) {
		if c.err != nil || c.roomID != roomID {
			continue
		}
		got = append(got, c.pdu)
	}
	slices.SortStableFunc(got, func(x, y *event.PDU) int { return int(x.Depth - y.Depth) })
	for _, g := range got {
		if _, err := a.receiveWithGap(ctx, origin, roomID, v, g, false); err != nil {
			return err
		}
	}
	return nil
}

// fetchAuthChain gets an event's auth chain from origin (/event_auth) and stores the events we
// lack as outliers.
func (a *API) fetchAuthChain(ctx context.Context, origin, roomID string, v event.Version, eventID string) error {
	var resp struct {
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if err := a.client.DoJSON(ctx, origin, "GET", "/_matrix/federation/v1/event_auth/"+url.PathEscape(roomID)+"/"+url.PathEscape(eventID), nil, &resp); err != nil {
		return err
	}
	return a.storeOutliers(ctx, roomID, v, resp.AuthChain)
}

// storeOutliers checks events (steps 1 to 3) and stores those that pass as outliers.
func (a *API) storeOutliers(ctx context.Context, roomID string, v event.Version, raws []json.RawMessage) error {
	pdus := a.checkAll(ctx, v, raws)
	if len(pdus) == 0 {
		return nil
	}
	_, err := a.rooms.ReceiveOutliers(ctx, roomID, v, pdus)
	return err
}

// checkAll is steps 1 to 3 for events of a room of version v (not necessarily known yet); the
// events that fail are dropped.
func (a *API) checkAll(ctx context.Context, v event.Version, raws []json.RawMessage) []*event.PDU {
	var out []*event.PDU
	for _, c := range a.checkEach(ctx, v, raws) {
		if c.err != nil {
			a.log.Info("federation: dropped an event", "err", c.err)
			continue
		}
		out = append(out, c.pdu)
	}
	return out
}

// checkEach is steps 1 to 3 for events of a room of version v, in parallel: the outcome of each
// (pdu is set when it parsed, even if it then failed).
func (a *API) checkEach(ctx context.Context, v event.Version, raws []json.RawMessage) []checked {
	out := make([]checked, len(raws))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, raw := range raws {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i].pdu, out[i].err = a.checkPDU(ctx, v, raw)
		}()
	}
	wg.Wait()
	return out
}

// fetchStateBefore gets the state before an event from origin: /state_ids, then the events we
// lack (with /event, or /state when there are many), stored as outliers.
func (a *API) fetchStateBefore(ctx context.Context, origin, roomID string, v event.Version, eventID string) (storage.StateMap, error) {
	var ids struct {
		PDUIDs       []string `json:"pdu_ids"`
		AuthChainIDs []string `json:"auth_chain_ids"`
	}
	q := "?event_id=" + url.QueryEscape(eventID)
	if err := a.client.DoJSON(ctx, origin, "GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+q, nil, &ids); err != nil {
		return nil, err
	}
	all := append(slices.Clone(ids.AuthChainIDs), ids.PDUIDs...)
	have, err := a.store.Read().EventMetas(ctx, all)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range all {
		if _, ok := have[id]; !ok && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > maxFetchEvents {
		var full struct {
			PDUs      []json.RawMessage `json:"pdus"`
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		if err := a.client.DoJSON(ctx, origin, "GET", "/_matrix/federation/v1/state/"+url.PathEscape(roomID)+q, nil, &full); err != nil {
			return nil, err
		}
		if err := a.storeOutliers(ctx, roomID, v, append(full.AuthChain, full.PDUs...)); err != nil {
			return nil, err
		}
	} else if len(missing) > 0 {
		var raws []json.RawMessage
		for _, id := range missing {
			raw, err := a.fetchEvent(ctx, origin, id)
			if err != nil {
				return nil, err
			}
			raws = append(raws, raw)
		}
		if err := a.storeOutliers(ctx, roomID, v, raws); err != nil {
			return nil, err
		}
	}
	evs, err := a.store.Read().Events(ctx, ids.PDUIDs)
	if err != nil {
		return nil, err
	}
	state := storage.StateMap{}
	for _, e := range evs {
		if e.RoomID != roomID || e.StateKey == nil || e.Rejected {
			continue
		}
		state[storage.StateKey{Type: e.Type, StateKey: *e.StateKey}] = e.EventID
	}
	return state, nil
}

// fetchEvent is GET /event/{eventId} on server: the PDU.
func (a *API) fetchEvent(ctx context.Context, server, eventID string) (json.RawMessage, error) {
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := a.client.DoJSON(ctx, server, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(eventID), nil, &resp); err != nil {
		return nil, err
	}
	if len(resp.PDUs) != 1 {
		return nil, fmt.Errorf("GET /event/%s on %s: %d PDUs, want 1", eventID, server, len(resp.PDUs))
	}
	return resp.PDUs[0], nil
}
