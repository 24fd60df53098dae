package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/presence"
	"github.com/hearthmx/homeserver/homeserver/receipt"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/typing"
)

// Typing notifications, read receipts and presence over federation (server-server API "Typing
// Notifications", "Receipts", "Presence"), both ways:
//
//	out: typing.Service.Set ──┐                       ┌─ m.typing   (ephemeral, key room+user)
//	     presence (a change) ─┴─ jobs ── worker ──────┴─ m.presence (ephemeral, key user)
//	     receipt.Service (a public m.read moved forward, after commit) ── m.receipt (durable)
//	in:  m.typing, m.receipt, m.presence EDUs ── checks ── typing.Remote, receipt.Remote,
//	     presence.Remote (which share them with the other nodes and wake local syncs)
//
// Typing and presence calls come from request paths and from the services' timers, which must not
// wait on the database: they go through a small buffered queue to one worker that finds the
// destinations (the servers in the room; the servers sharing a room with the user) and queues
// the EDU. Receipts are queued durably in the request that set them.
//
// Inbound, every user must belong to the server that sent the transaction; typing and receipts
// also need the user joined to the room and the room's ACL to allow that server; presence is
// taken only for users joined to a room this server knows (so a server cannot fill our memory
// with users nobody here can see).

// ephemeralJobs bounds the typing and presence notices waiting for the worker; past it they are
// dropped (logged): they are ephemeral, and the next change replaces them.
const ephemeralJobs = 1024

// ephemeralFed holds the typing, receipt and presence services and the outbound worker.
type ephemeralFed struct {
	a        *API
	typing   *typing.Service
	receipts *receipt.Service
	presence *presence.Service

	jobs   chan func(ctx context.Context)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// SetEphemeral connects the typing, receipt and presence services with federation: their local
// changes go out as EDUs and the EDUs of other servers reach them. Call it before serving; any
// of them may be nil (that kind is neither sent nor received).
func (a *API) SetEphemeral(t *typing.Service, r *receipt.Service, p *presence.Service) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &ephemeralFed{a: a, typing: t, receipts: r, presence: p, jobs: make(chan func(context.Context), ephemeralJobs),
		ctx: ctx, cancel: cancel}
	a.eph = f
	if a.sender == nil {
		return
	}
	if t != nil {
		t.SetFederation(f)
	}
	if r != nil {
		r.SetFederation(f)
	}
	if p != nil {
		p.SetFederation(f)
	}
	f.wg.Add(1)
	go f.work()
}

// stopEphemeral stops the outbound worker.
func (a *API) stopEphemeral() {
	if a.eph == nil {
		return
	}
	a.eph.cancel()
	a.eph.wg.Wait()
}

func (f *ephemeralFed) work() {
	defer f.wg.Done()
	for {
		select {
		case <-f.ctx.Done():
			return
		case job := <-f.jobs:
			ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
			job(ctx)
			cancel()
		}
	}
}

// enqueue hands a job to the worker, or drops it when the worker is behind.
func (f *ephemeralFed) enqueue(what string, job func(ctx context.Context)) {
	select {
	case f.jobs <- job:
	default:
		f.a.log.Warn("federation: dropped an outgoing EDU, the queue is full", "edu_type", what)
	}
}

// typingEDU is the content of m.typing.
type typingEDU struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing bool   `json:"typing"`
}

// Typing implements typing.Federation: an m.typing EDU to the room's other servers.
func (f *ephemeralFed) Typing(roomID, userID string, typing bool) {
	f.enqueue("m.typing", func(ctx context.Context) {
		dests, err := f.a.rooms.ServersInRoom(ctx, roomID)
		if err != nil {
			f.a.log.Warn("federation: typing: servers of the room", "room_id", roomID, "err", err)
			return
		}
		f.a.sender.QueueEphemeralEDU(dests, "m.typing", roomID+" "+userID, typingEDU{RoomID: roomID, UserID: userID, Typing: typing})
	})
}

// presenceUpdate is one entry of m.presence's push list.
type presenceUpdate struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	LastActiveAgo   int64   `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active"`
	StatusMsg       *string `json:"status_msg,omitempty"`
}

// presenceEDU is the content of m.presence.
type presenceEDU struct {
	Push []presenceUpdate `json:"push"`
}

// Presence implements presence.Federation: an m.presence EDU to the servers sharing a room with
// the user.
func (f *ephemeralFed) Presence(userID string, st presence.Status) {
	u := presenceUpdate{UserID: userID, Presence: st.Presence, StatusMsg: st.StatusMsg}
	if st.LastActiveAgo != nil {
		u.LastActiveAgo = *st.LastActiveAgo
	}
	if st.CurrentlyActive != nil {
		u.CurrentlyActive = *st.CurrentlyActive
	}
	f.enqueue("m.presence", func(ctx context.Context) {
		users, err := f.a.store.Read().RemoteUsersSharingRoomWith(ctx, userID, f.a.serverName)
		if err != nil {
			f.a.log.Warn("federation: presence: users sharing a room", "user_id", userID, "err", err)
			return
		}
		var dests []string
		for _, other := range users {
			if s := serverName(other); s != "" && !slices.Contains(dests, s) {
				dests = append(dests, s)
			}
		}
		f.a.sender.QueueEphemeralEDU(dests, "m.presence", userID, presenceEDU{Push: []presenceUpdate{u}})
	})
}

// receiptEntry is one user's receipt in m.receipt.
type receiptEntry struct {
	EventIDs []string `json:"event_ids"`
	Data     struct {
		TS       int64   `json:"ts"`
		ThreadID *string `json:"thread_id,omitempty"`
	} `json:"data"`
}

// Receipt implements receipt.Federation: an m.receipt EDU, queued durably, to the room's other
// servers.
func (f *ephemeralFed) Receipt(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error {
	dests, err := f.a.rooms.ServersInRoom(ctx, roomID)
	if err != nil {
		return err
	}
	e := receiptEntry{EventIDs: []string{eventID}}
	e.Data.TS = ts
	if threadID != "" {
		e.Data.ThreadID = &threadID
	}
	content := map[string]map[string]map[string]receiptEntry{roomID: {receipt.TypeRead: {userID: e}}}
	return f.a.sender.QueueEDU(ctx, dests, "m.receipt", content)
}

// maxReceiptEvents bounds the event IDs of one user's receipt that are looked at.
const maxReceiptEvents = 10

// errOtherServer refuses an EDU entry about a user of another server than the origin.
var errOtherServer = spec.ErrForbidden.With("The user does not belong to the origin server")

// ownedBy checks that userID is a user of server.
func ownedBy(userID, server string) error {
	if len(userID) < 2 || userID[0] != '@' || serverName(userID) != server {
		return fmt.Errorf("%s: %w", userID, errOtherServer)
	}
	return nil
}

// roomAllows checks the room's server ACL for origin.
func (a *API) roomAllows(ctx context.Context, roomID, origin string) error {
	ok, err := a.serverAllowed(ctx, roomID, origin)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: %w", roomID, errDeniedByACL)
	}
	return nil
}

// receiveTyping handles m.typing: the user must belong to origin, be joined to the room, and the
// room's ACL must allow origin.
func (a *API) receiveTyping(ctx context.Context, origin string, content json.RawMessage) error {
	if a.eph == nil || a.eph.typing == nil {
		return nil
	}
	var c typingEDU
	if err := json.Unmarshal(content, &c); err != nil || c.RoomID == "" || c.UserID == "" {
		return spec.ErrBadJSON.With("m.typing needs room_id, user_id and typing")
	}
	if err := ownedBy(c.UserID, origin); err != nil {
		return err
	}
	if err := a.roomAllows(ctx, c.RoomID, origin); err != nil {
		return err
	}
	return a.eph.typing.Remote(ctx, c.RoomID, c.UserID, c.Typing)
}

// receiveReceipt handles m.receipt: for each room the ACL allows origin in, each m.read receipt of
// a user of origin joined to the room is stored (other receipt types are ignored). Entries are
// independent: one that is refused does not stop the others.
func (a *API) receiveReceipt(ctx context.Context, origin string, content json.RawMessage) error {
	if a.eph == nil || a.eph.receipts == nil {
		return nil
	}
	var rooms map[string]map[string]map[string]json.RawMessage
	if err := json.Unmarshal(content, &rooms); err != nil {
		return spec.ErrBadJSON.With("m.receipt content must map rooms to receipt types to users")
	}
	var errs []error
	for roomID, types := range rooms {
		reads := types[receipt.TypeRead]
		if len(reads) == 0 {
			continue
		}
		if err := a.roomAllows(ctx, roomID, origin); err != nil {
			errs = append(errs, err)
			continue
		}
		for userID, raw := range reads {
			if err := ownedBy(userID, origin); err != nil {
				errs = append(errs, err)
				continue
			}
			var e receiptEntry
			if err := json.Unmarshal(raw, &e); err != nil || len(e.EventIDs) == 0 || e.Data.ThreadID != nil && *e.Data.ThreadID == "" {
				errs = append(errs, fmt.Errorf("%s in %s: %w", userID, roomID, spec.ErrBadJSON.With("Malformed receipt")))
				continue
			}
			thread := ""
			if e.Data.ThreadID != nil {
				thread = *e.Data.ThreadID
			}
			// The spec sends exactly one event ID; a few more are tolerated, not a flood.
			for _, eventID := range e.EventIDs[:min(len(e.EventIDs), maxReceiptEvents)] {
				if _, err := a.eph.receipts.Remote(ctx, roomID, userID, eventID, thread, e.Data.TS); err != nil {
					errs = append(errs, fmt.Errorf("%s in %s on %s: %w", userID, roomID, eventID, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// receivePresence handles m.presence: each update of a user of origin joined to a room this
// server knows is applied. Ignored when presence is disabled.
func (a *API) receivePresence(ctx context.Context, origin string, content json.RawMessage) error {
	if a.eph == nil || a.eph.presence == nil || !a.eph.presence.Enabled() {
		return nil
	}
	var c struct {
		Push []json.RawMessage `json:"push"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return spec.ErrBadJSON.With("m.presence needs push")
	}
	var errs []error
	for _, raw := range c.Push {
		var u presenceUpdate
		if err := json.Unmarshal(raw, &u); err != nil {
			errs = append(errs, spec.ErrBadJSON.With("Malformed presence update"))
			continue
		}
		if err := ownedBy(u.UserID, origin); err != nil {
			errs = append(errs, err)
			continue
		}
		rooms, err := a.store.Read().JoinedRoomsOfUsers(ctx, []string{u.UserID})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(rooms) == 0 {
			continue // nobody here shares a room with them
		}
		msg := ""
		if u.StatusMsg != nil {
			msg = *u.StatusMsg
		}
		if err := a.eph.presence.Remote(u.UserID, u.Presence, msg, u.LastActiveAgo, u.CurrentlyActive); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.UserID, err))
		}
	}
	return errors.Join(errs...)
}
