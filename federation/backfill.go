package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Backfill both ways (server-server API, "Backfilling and retrieving missing events"): serving
// GET /backfill to other servers, and fetching a room's past for /messages (API.Backfill, which
// the room service calls through room.Backfiller; homeserver/room/backfill.go has the picture).

const (
	// maxBackfillV bounds the event IDs of one /backfill request.
	maxBackfillV = 50
	// maxBackfillGaps bounds the events of one /backfill answer whose auth chain or state before
	// is fetched (each costs requests to the server that answered); the others are left for later.
	maxBackfillGaps = 10
)

// getBackfill is GET /_matrix/federation/v1/backfill/{roomId}?v=<event ID>&...&limit=<n>: the
// given events and those before them, up to limit (capped), for a server in the room.
func (a *API) getBackfill(r *http.Request) (any, error) {
	q := r.URL.Query()
	var from []string
	for _, v := range q["v"] {
		for id := range strings.SplitSeq(v, ",") { // some servers join the IDs with commas
			if id != "" && !slices.Contains(from, id) {
				from = append(from, id)
			}
		}
	}
	if len(from) == 0 {
		return nil, spec.ErrMissingParam.With("v (the event IDs to backfill from) is required")
	}
	if len(from) > maxBackfillV {
		return nil, spec.ErrInvalidParam.Withf("At most %d event IDs in v", maxBackfillV)
	}
	ls := q.Get("limit")
	if ls == "" {
		return nil, spec.ErrMissingParam.With("limit is required")
	}
	limit, err := strconv.Atoi(ls)
	if err != nil || limit < 0 {
		return nil, spec.ErrInvalidParam.With("limit must be a non-negative integer")
	}
	pdus, err := a.rooms.BackfillForServer(r.Context(), Origin(r.Context()), chi.URLParam(r, "roomId"), from, limit)
	if err != nil {
		return nil, err
	}
	return map[string]any{"origin": a.serverName, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}, nil
}

// Backfill asks servers in turn for the events before from (GET /backfill, limit events) and
// stores those of the first server whose answer brings new events (room.Backfiller); servers the
// room's ACL denies are not asked. The events
// go through steps 1 to 3 of the checks on receipt (dropped when the signatures fail, redacted when
// the content hash does), then to the room service as events of the past; an event whose auth
// chain or state before is missing gets them from the same server (/event_auth, /state_ids), as
// /send does. It returns how many events were stored; an error when no server answered.
func (a *API) Backfill(ctx context.Context, roomID string, servers, from []string, limit int) (int, error) {
	v, err := a.roomVersion(ctx, roomID)
	if err != nil {
		return 0, err
	}
	q := url.Values{"v": from, "limit": {strconv.Itoa(limit)}}
	path := "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID) + "?" + q.Encode()
	var errs []error
	answered := false
	for _, srv := range servers {
		if srv == a.serverName || !a.mayAsk(ctx, roomID, srv) { // not a server the room's ACL denies (acl.go)
			continue
		}
		var resp struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := a.client.DoJSON(ctx, srv, "GET", path, nil, &resp); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		answered = true
		if len(resp.PDUs) > limit {
			resp.PDUs = resp.PDUs[:limit]
		}
		n, err := a.receiveBackfill(ctx, srv, roomID, v, resp.PDUs)
		if err != nil {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
	if answered {
		return 0, nil
	}
	if len(errs) == 0 {
		return 0, errors.New("no server to ask")
	}
	return 0, errors.Join(errs...)
}

// receiveBackfill checks the events of one /backfill answer from origin and stores them as events
// of the past, and returns how many were stored (accepted or rejected).
func (a *API) receiveBackfill(ctx context.Context, origin, roomID string, v event.Version, raws []json.RawMessage) (int, error) {
	var pdus []*event.PDU
	seen := map[string]bool{}
	for _, p := range a.checkAll(ctx, v, raws) {
		// Events of another room are not this room's past: dropped, never stored.
		if p.EffectiveRoomID() == roomID && !seen[p.EventID] {
			seen[p.EventID] = true
			pdus = append(pdus, p)
		}
	}
	if len(pdus) == 0 {
		return 0, nil
	}
	slices.SortStableFunc(pdus, func(x, y *event.PDU) int { return int(x.Depth - y.Depth) })
	in := make([]room.Incoming, len(pdus))
	for i, p := range pdus {
		in[i] = room.Incoming{PDU: p}
	}
	outs, err := a.rooms.ReceiveBackfill(ctx, roomID, in)
	if err != nil {
		return 0, err
	}
	// Events missing their auth chain or the state before them (the oldest of the answer, whose
	// prev events nobody here has): fetch those from origin, oldest first, and try again together
	// with the later ones still missing something (they may have been waiting for this one).
	gaps := 0
	for i := range outs {
		if !isMissing(outs[i].Err) || gaps >= maxBackfillGaps {
			continue
		}
		gaps++
		one := func(state storage.StateMap) error {
			o, err := a.rooms.ReceiveBackfill(ctx, roomID, []room.Incoming{{PDU: pdus[i], StateBefore: state}})
			if err == nil {
				outs[i] = o[0]
			}
			return err
		}
		if errors.Is(outs[i].Err, room.ErrMissingAuthEvents) {
			if err := a.fetchAuthChain(ctx, origin, roomID, v, pdus[i].EventID); err != nil {
				a.log.Info("federation: backfill: fetching auth events failed", "event_id", pdus[i].EventID, "origin", origin, "err", err)
				continue
			}
			if err := one(nil); err != nil {
				return 0, err
			}
		}
		if errors.Is(outs[i].Err, room.ErrMissingPrevEvents) {
			state, err := a.fetchStateBefore(ctx, origin, roomID, v, pdus[i].EventID)
			if err != nil {
				a.log.Info("federation: backfill: fetching the state before an event failed", "event_id", pdus[i].EventID, "origin", origin, "err", err)
				continue
			}
			if err := one(state); err != nil {
				return 0, err
			}
		}
		var again []int
		var retry []room.Incoming
		for j := i + 1; j < len(outs); j++ {
			if isMissing(outs[j].Err) {
				again = append(again, j)
				retry = append(retry, room.Incoming{PDU: pdus[j]})
			}
		}
		if len(retry) == 0 {
			continue
		}
		retried, err := a.rooms.ReceiveBackfill(ctx, roomID, retry)
		if err != nil {
			return 0, err
		}
		for k, j := range again {
			outs[j] = retried[k]
		}
	}
	stored := 0
	for _, o := range outs {
		var rej *room.RejectedError
		if o.Err == nil && !o.Duplicate || errors.As(o.Err, &rej) {
			stored++
		}
	}
	return stored, nil
}
