package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/federation/serverkey"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Joins over federation ("Joining Rooms"), both sides:
//
//	joining server (JoinRemote)                 resident server (makeJoin, sendJoin)
//	  GET /v1/make_join/{room}/{user}?ver=... ─▶  template: prev_events, auth_events, depth,
//	                                              checked against the current state
//	  fill in, hash, sign the join             ◀─
//	  PUT /v2/send_join/{room}/{event}      ─▶  verify, co-sign, receive it (auth rules, soft
//	                                              fail), queue it for the room's other servers
//	  verify state and auth chain, store      ◀─ state before the join, auth chain, the event
//	  them and the join (room.CompleteRemoteJoin)
//
// From then on the joining server is among the room's servers: events of both reach each other
// through /send.

// supportedVersions are the ver= values of make_join.
func supportedVersions() []string {
	out := make([]string, len(event.Versions))
	for i, v := range event.Versions {
		out[i] = v.ID()
	}
	return out
}

// makeJoin is GET /_matrix/federation/v1/make_join/{roomId}/{userId}.
func (a *API) makeJoin(r *http.Request) (any, error) {
	vers := r.URL.Query()["ver"]
	if len(vers) == 0 {
		vers = []string{"1"} // the spec's default: a server that names none supports only v1
	}
	return a.makeMembership(r, room.MembershipJoin, vers)
}

// makeMembership answers make_join and make_leave.
func (a *API) makeMembership(r *http.Request, membership string, vers []string) (any, error) {
	roomID, userID := chi.URLParam(r, "roomId"), chi.URLParam(r, "userId")
	if serverName(userID) != Origin(r.Context()) {
		return nil, spec.ErrForbidden.With("The user is not on the requesting server")
	}
	v, template, err := a.rooms.MakeMembership(r.Context(), roomID, userID, membership, vers)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_version": v.ID(), "event": template}, nil
}

// sendJoin is PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}.
func (a *API) sendJoin(r *http.Request) (any, error) {
	join, err := a.acceptMembership(r, room.MembershipJoin)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	state, chain, err := a.rooms.StateAt(ctx, Origin(ctx), join.RoomID, join.EventID)
	if err != nil {
		return nil, err
	}
	pdus, auth, err := a.stateJSON(r, state, chain)
	if err != nil {
		return nil, err
	}
	servers, err := a.rooms.ServersInRoom(ctx, join.RoomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"state": pdus, "auth_chain": auth, "event": join.Raw, "members_omitted": false,
		"servers_in_room": slices.DeleteFunc(servers, func(s string) bool { return s == Origin(ctx) })}, nil
}

// acceptMembership checks the membership event of send_join or send_leave as the spec asks,
// adds our signature and receives it into the room, to be relayed to the room's other servers.
func (a *API) acceptMembership(r *http.Request, membership string) (*event.PDU, error) {
	ctx := r.Context()
	roomID, eventID, origin := chi.URLParam(r, "roomId"), chi.URLParam(r, "eventId"), Origin(ctx)
	v, err := a.roomVersion(ctx, roomID)
	if errors.Is(err, errUnknownRoom) {
		return nil, spec.ErrNotFound.With("Unknown room")
	}
	if err != nil {
		return nil, err
	}
	var body json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		return nil, spec.ErrBadJSON.With("The body is not a JSON event")
	}
	p, err := event.Parse(v, body)
	if err != nil {
		return nil, spec.ErrInvalidParam.Withf("Invalid event: %v", err)
	}
	if p, err = p.WithoutUnsigned(); err != nil {
		return nil, spec.ErrInvalidParam.Withf("Invalid event: %v", err)
	}
	switch {
	case p.EventID != eventID:
		return nil, spec.ErrInvalidParam.Withf("The event's ID is %s, not %s", p.EventID, eventID)
	case p.RoomID != roomID:
		return nil, spec.ErrInvalidParam.With("The event is for another room")
	case p.Type != room.TypeMember || p.StateKey == nil:
		return nil, spec.ErrInvalidParam.With("The event is not an m.room.member event")
	case room.Membership(p) != membership:
		return nil, spec.ErrInvalidParam.Withf("The event's membership is not %s", membership)
	case *p.StateKey != p.Sender:
		return nil, spec.ErrInvalidParam.With("The state_key is not the sender")
	case serverName(p.Sender) != origin:
		return nil, spec.ErrInvalidParam.With("The sender is not on the requesting server")
	}
	// Signed by us first: a restricted join naming one of our users in
	// join_authorised_via_users_server needs our signature to verify, and only we can add it
	// (Synapse's joins of our restricted rooms were refused here).
	signed, err := a.rooms.SignPDU(p)
	if err != nil {
		return nil, err
	}
	if p, err = event.Parse(v, signed); err != nil {
		return nil, err
	}
	if err := event.VerifyEventSignatures(ctx, v, p, a.keys.Key); err != nil {
		return nil, spec.ErrInvalidParam.Withf("The event's signatures do not verify: %v", err)
	}
	if err := p.CheckContentHash(); err != nil {
		return nil, spec.ErrInvalidParam.With("The event's content hash does not match")
	}
	outs, err := a.rooms.ReceivePDUs(ctx, roomID, []room.Incoming{{PDU: p, Relay: true, RelayExcept: []string{origin}}})
	if err != nil {
		return nil, err
	}
	switch o := outs[0]; {
	case isMissing(o.Err):
		return nil, spec.ErrInvalidParam.Withf("The event names events this server does not have: %v", o.Err)
	case o.Err != nil:
		var rej *room.RejectedError
		if errors.As(o.Err, &rej) {
			return nil, spec.ErrForbidden.With(rej.Reason)
		}
		return nil, o.Err
	case o.SoftFailed:
		return nil, spec.ErrForbidden.With("The event is not allowed by the room's current state")
	}
	return p, nil
}

// JoinRemote joins a local user to a room this server is not in, through the first of servers
// that answers: make_join, then send_join, then the room's state is stored with the join. It
// returns the join's event ID.
func (a *API) JoinRemote(ctx context.Context, roomID string, servers []string, userID string, profile room.MemberProfile, reason string) (string, error) {
	if inv, err := a.rooms.RemoteMembership(ctx, roomID, userID); err == nil && inv.Membership == room.MembershipInvite {
		servers = append([]string{serverName(inv.Sender)}, servers...) // the inviter's server is in the room
	}
	join := func(srv string) (string, error) { return a.joinVia(ctx, srv, roomID, userID, profile, reason) }
	return a.tryServers(servers, roomID, "join the room", join, func(err error) error {
		var se *spec.Error
		var fe *fedclient.Error
		switch {
		case errors.As(err, &se) && (se.Code == spec.ErrForbidden.Code || se.Code == ErrIncompatibleRoomVersion.Code):
			return err
		case errors.As(err, &fe) && fe.Status == http.StatusForbidden:
			return spec.ErrForbidden.With(fe.Message)
		case errors.As(err, &fe) && fe.Code == ErrIncompatibleRoomVersion.Code:
			// Every server of the room would say the same: this server lacks the room's version.
			return ErrIncompatibleRoomVersion.With("This server does not support the room's version: " + fe.Message)
		}
		return nil
	})
}

// ErrIncompatibleRoomVersion is M_INCOMPATIBLE_ROOM_VERSION (see room.ErrIncompatibleRoomVersion).
var ErrIncompatibleRoomVersion = room.ErrIncompatibleRoomVersion

// memberTemplate is the event of a make_join or make_leave answer.
type memberTemplate struct {
	Type       string                     `json:"type"`
	RoomID     string                     `json:"room_id"`
	Sender     string                     `json:"sender"`
	StateKey   *string                    `json:"state_key"`
	Content    map[string]json.RawMessage `json:"content"`
	PrevEvents []string                   `json:"prev_events"`
	AuthEvents []string                   `json:"auth_events"`
	Depth      int64                      `json:"depth"`
}

// makeMembershipOn asks server for the template of userID's membership event and returns it
// signed by us, checked as the spec requires.
func (a *API) makeMembershipOn(ctx context.Context, server, endpoint, roomID, userID, membership string, extra map[string]any) (event.Version, *event.PDU, error) {
	path := "/_matrix/federation/v1/" + endpoint + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(userID)
	if membership == room.MembershipJoin || membership == room.MembershipKnock {
		path += "?ver=" + strings.Join(supportedVersions(), "&ver=")
	}
	var resp struct {
		RoomVersion string         `json:"room_version"`
		Event       memberTemplate `json:"event"`
	}
	if err := a.client.DoJSON(ctx, server, "GET", path, nil, &resp); err != nil {
		return event.Version{}, nil, err
	}
	v, err := event.LookupVersion(resp.RoomVersion)
	if err != nil {
		return v, nil, ErrIncompatibleRoomVersion.Withf("The room's version %q is not supported", resp.RoomVersion)
	}
	t := resp.Event
	var m string
	_ = json.Unmarshal(t.Content["membership"], &m)
	if t.Type != room.TypeMember || t.RoomID != roomID || t.Sender != userID || t.StateKey == nil || *t.StateKey != userID || m != membership {
		return v, nil, fmt.Errorf("%s answered %s with a template that is not a %s of %s in %s", server, endpoint, membership, userID, roomID)
	}
	content := map[string]any{}
	for k, val := range t.Content {
		content[k] = val
	}
	for k, val := range extra {
		content[k] = val
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return v, nil, err
	}
	p, err := event.Build(v, event.Proto{RoomID: roomID, Sender: userID, Type: room.TypeMember, StateKey: &userID, Content: raw,
		PrevEvents: t.PrevEvents, AuthEvents: t.AuthEvents, Depth: t.Depth, OriginServerTS: time.Now().UnixMilli()},
		a.serverName, a.key.ID, a.key.Private)
	return v, p, err
}

// joinVia is the join handshake with one resident server.
func (a *API) joinVia(ctx context.Context, server, roomID, userID string, profile room.MemberProfile, reason string) (string, error) {
	v, join, err := a.makeMembershipOn(ctx, server, "make_join", roomID, userID, room.MembershipJoin, memberExtra(profile, reason))
	if err != nil {
		return "", err
	}
	var resp struct {
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
		Event     json.RawMessage   `json:"event"`
	}
	path := "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.EventID)
	if err := a.client.DoJSON(ctx, server, "PUT", path, json.RawMessage(join.Raw), &resp); err != nil {
		return "", err
	}
	if len(resp.Event) > 0 {
		// The resident's copy carries its signature too (required for restricted joins).
		signed, err := a.checkPDU(ctx, v, resp.Event)
		if err == nil && signed.EventID == join.EventID {
			join = signed
		}
	}
	state, chain, err := a.checkJoinState(ctx, v, join, resp.State, resp.AuthChain)
	if err != nil {
		return "", fmt.Errorf("%s answered send_join with a state this server cannot join on: %w", server, err)
	}
	if err := a.rooms.CompleteRemoteJoin(ctx, v, roomID, state, chain, join); err != nil {
		return "", err
	}
	a.versions.Store(roomID, v)
	return join.EventID, nil
}

// checkJoinState checks the state and auth chain of a send_join answer (steps 1 to 3 of the PDU
// pipeline; the two lists overlap, so each distinct event is checked once) and returns the
// events that pass. Events that fail are dropped, as the spec asks, but the answer is refused if
// the join would then rest on part of the room: when the state has no m.room.create event, or an
// auth event of the join or of a state event (through the auth chain) is missing or failed.
func (a *API) checkJoinState(ctx context.Context, v event.Version, join *event.PDU, rawState, rawChain []json.RawMessage) (state, chain []*event.PDU, err error) {
	pos := map[string]int{} // distinct event JSON -> its index in raws
	var raws []json.RawMessage
	for _, raw := range slices.Concat(rawState, rawChain) {
		if _, ok := pos[string(raw)]; !ok {
			pos[string(raw)] = len(raws)
			raws = append(raws, raw)
		}
	}
	res := a.checkEach(ctx, v, raws)
	a.recheckUnavailable(ctx, v, raws, res)
	have := map[string]*event.PDU{}
	for _, c := range res {
		if c.err != nil {
			a.log.Info("federation: dropped an event of a send_join answer", "err", c.err)
			continue
		}
		have[c.pdu.EventID] = c.pdu
	}
	pick := func(raws []json.RawMessage) []*event.PDU {
		out := make([]*event.PDU, 0, len(raws))
		seen := map[string]bool{}
		for _, raw := range raws {
			// A copy that failed counts as its event if another copy of it passed.
			if p := res[pos[string(raw)]].pdu; p != nil && have[p.EventID] != nil && !seen[p.EventID] {
				seen[p.EventID] = true
				out = append(out, have[p.EventID])
			}
		}
		return out
	}
	state, chain = pick(rawState), pick(rawChain)
	if err := joinNeeds(join, state, have); err != nil {
		return nil, nil, err
	}
	return state, chain, nil
}

// recheckUnavailable checks again, once, the events of res that failed only because a signing
// key could not be had (serverkey.UnavailableError), after a fresh fetch of each such key that
// ignores the key ring's refetch interval. Without it, a key fetch that timed out under load, or
// the interval after an earlier failed one, dropped the events of a whole server from the state
// of a room being joined, as if they were forged, and the join completed with part of the room.
func (a *API) recheckUnavailable(ctx context.Context, v event.Version, raws []json.RawMessage, res []checked) {
	var again []int
	wanted := map[string]*serverkey.UnavailableError{} // by server: one key is enough to ask it
	for i, c := range res {
		var ue *serverkey.UnavailableError
		if c.err != nil && errors.As(c.err, &ue) {
			again = append(again, i)
			wanted[ue.Server] = ue
		}
	}
	if len(again) == 0 {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, ue := range wanted {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := a.keys.Refetch(ctx, ue.Server, ue.KeyID, ue.AtTS); err != nil {
				a.log.Info("federation: refetching server keys for a join", "server", ue.Server, "err", err)
			}
		})
	}
	wg.Wait()
	retry := make([]json.RawMessage, len(again))
	for k, i := range again {
		retry[k] = raws[i]
	}
	for k, c := range a.checkEach(ctx, v, retry) {
		res[again[k]] = c
	}
}

// joinNeeds checks that the events the join rests on are all in have: an m.room.create event in
// the state, and the auth events of the join and of each state event, through their own auth
// events.
func joinNeeds(join *event.PDU, state []*event.PDU, have map[string]*event.PDU) error {
	todo := slices.Clone(join.AuthEvents)
	create := false
	for _, p := range state {
		create = create || (p.Type == room.TypeCreate && p.StateKey != nil && *p.StateKey == "")
		todo = append(todo, p.AuthEvents...)
	}
	if !create {
		return errors.New("the state has no valid m.room.create event")
	}
	seen := map[string]bool{}
	for len(todo) > 0 {
		id := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		p := have[id]
		if p == nil {
			return fmt.Errorf("auth event %s is missing or did not verify", id)
		}
		todo = append(todo, p.AuthEvents...)
	}
	return nil
}
