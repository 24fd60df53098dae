package room_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/room/stateres"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// Receiving events of another server (ReceivePDUs, ReceiveOutliers) straight into the room
// service: the federation tests (package federation) run the same through HTTP.

// resolve is the composition root's stateres adapter (homeserver/federation.go).
func resolve(ctx context.Context, v event.Version, states []storage.StateMap,
	fetch func(ctx context.Context, id string) (*event.PDU, error), rejected func(string) bool) (storage.StateMap, error) {
	in := make([]stateres.StateMap, len(states))
	for i, st := range states {
		in[i] = stateres.StateMap{}
		for k, id := range st {
			in[i][room.StateKeyTuple(k)] = id
		}
	}
	r := stateres.Resolver{Version: v, Fetch: fetch, IsRejected: rejected}
	out, err := r.Resolve(ctx, in)
	res := storage.StateMap{}
	for k, id := range out {
		res[storage.StateKey(k)] = id
	}
	return res, err
}

// remote builds events of users of remote.example.
type remote struct {
	t     *testing.T
	svc   *room.Service
	store *storage.Store
	v     event.Version
	room  string
	key   ed25519.PrivateKey
	ts    int64 // origin_server_ts of the last event built
}

const remoteServer = "remote.example"

// event builds an event after prev (the room's forward extremities when nil) with the auth
// events of the state after the last of them.
func (r *remote) event(sender, typ string, stateKey *string, content any, prev []string) *event.PDU {
	r.t.Helper()
	ctx := context.Background()
	c := r.store.Read()
	var err error
	if prev == nil {
		if prev, err = c.ForwardExtremities(ctx, r.room); err != nil {
			r.t.Fatal(err)
		}
	}
	evs, err := c.Events(ctx, prev)
	if err != nil {
		r.t.Fatal(err)
	}
	var depth, group int64
	for _, e := range evs {
		if e.Depth >= depth {
			depth, group = e.Depth, e.StateGroup
		}
	}
	state, err := c.StateGroup(ctx, group)
	if err != nil {
		r.t.Fatal(err)
	}
	raw, _ := json.Marshal(content)
	draft := &event.PDU{Type: typ, StateKey: stateKey, Sender: sender, Content: raw, Version: r.v}
	var auth []string
	for _, k := range room.AuthEventsNeeded(r.v, draft) {
		if id := state[storage.StateKey(k)]; id != "" {
			auth = append(auth, id)
		}
	}
	r.ts = max(r.ts+1, 1_700_000_000_000)
	p, err := event.Build(r.v, event.Proto{RoomID: r.room, Sender: sender, Type: typ, StateKey: stateKey, Content: raw,
		PrevEvents: prev, AuthEvents: auth, Depth: depth + 1, OriginServerTS: r.ts}, remoteServer, "ed25519:r", r.key)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *remote) receive(ps ...*event.PDU) []room.Outcome {
	r.t.Helper()
	in := make([]room.Incoming, len(ps))
	for i, p := range ps {
		in[i] = room.Incoming{PDU: p}
	}
	outs, err := r.svc.ReceivePDUs(context.Background(), r.room, in)
	if err != nil {
		r.t.Fatal(err)
	}
	return outs
}

func TestReceivePDUs(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		for _, v := range []event.Version{event.V11, event.V12} {
			t.Run("v"+v.ID(), func(t *testing.T) { testReceivePDUs(t, s, v) })
		}
	})
}

func testReceivePDUs(t *testing.T, s *storage.Store, v event.Version) {
	ctx := context.Background()
	_, priv, _ := ed25519.GenerateKey(nil)
	svc := room.New(s, nil, room.Options{ServerName: "test.local", Key: signing.Key{ID: "ed25519:a_test", Private: priv}, DefaultVersion: v,
		Resolve: resolve}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(svc.Close)
	alice, rob := "@alice:test.local", "@rob:"+remoteServer
	roomID, err := svc.CreateRoom(ctx, room.CreateRequest{Creator: alice, Preset: room.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	_, rkey, _ := ed25519.GenerateKey(nil)
	r := &remote{t: t, svc: svc, store: s, v: v, room: roomID, key: rkey}
	c := s.Read()
	stored := func(id string) storage.Event {
		t.Helper()
		e, err := c.Event(ctx, id)
		if err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		return e
	}
	queued, err := c.OutboxLen(ctx, remoteServer) // by the tests of other versions on this store
	if err != nil {
		t.Fatal(err)
	}
	pending := func() int {
		n, err := c.OutboxLen(ctx, remoteServer)
		if err != nil {
			t.Fatal(err)
		}
		return n - queued
	}

	// Before rob joins, nothing is queued for his server.
	if _, err := svc.Send(ctx, roomID, sender(alice), "m.room.message", json.RawMessage(`{"body":"alone"}`)); err != nil {
		t.Fatal(err)
	}
	if n := pending(); n != 0 {
		t.Fatalf("queued for a server with no member: %d", n)
	}

	// rob joins through the make_join template, then talks.
	_, tmpl, err := svc.MakeMembership(ctx, roomID, rob, room.MembershipJoin, []string{v.ID()})
	if err != nil {
		t.Fatal(err)
	}
	var tp struct {
		PrevEvents []string `json:"prev_events"`
	}
	_ = json.Unmarshal(tmpl, &tp)
	join := r.event(rob, room.TypeMember, &rob, map[string]string{"membership": "join"}, tp.PrevEvents)
	if o := r.receive(join)[0]; o.Err != nil || o.SoftFailed {
		t.Fatalf("join: %+v", o)
	}
	m1 := r.event(rob, "m.room.message", nil, map[string]string{"body": "m1"}, []string{join.EventID})
	if o := r.receive(m1)[0]; o.Err != nil || o.SoftFailed {
		t.Fatalf("message: %+v", o)
	}
	if m, err := svc.CurrentMembership(ctx, roomID, rob); err != nil || m != "join" {
		t.Fatalf("rob's membership %q, %v", m, err)
	}
	if e := stored(m1.EventID); e.StreamPos == 0 || e.Outlier || e.Rejected {
		t.Fatalf("m1 stored as %+v", e)
	}
	if again := r.receive(m1); !again[0].Duplicate {
		t.Fatalf("m1 again: %+v", again[0])
	}

	// alice's events now go to rob's server.
	a1, err := svc.Send(ctx, roomID, sender(alice), "m.room.message", json.RawMessage(`{"body":"a1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n := pending(); n != 1 {
		t.Fatalf("queued for rob's server: %d, want 1", n)
	}

	// A fork: rob changes his display name after m1, not having seen a1. Both branches are
	// forward extremities, and the current state is their resolution.
	rename := r.event(rob, room.TypeMember, &rob, map[string]string{"membership": "join", "displayname": "Rob"}, []string{m1.EventID})
	if o := r.receive(rename)[0]; o.Err != nil || o.SoftFailed {
		t.Fatalf("rename: %+v", o)
	}
	exts, _ := c.ForwardExtremities(ctx, roomID)
	slices.Sort(exts)
	want := []string{a1, rename.EventID}
	slices.Sort(want)
	if !slices.Equal(exts, want) {
		t.Fatalf("extremities %v, want %v", exts, want)
	}
	if id, _ := c.CurrentStateEvent(ctx, roomID, room.TypeMember, rob); id != rename.EventID {
		t.Fatalf("rob's current member event %s, want the rename", id)
	}
	// alice's next event follows both.
	a2, err := svc.Send(ctx, roomID, sender(alice), "m.room.message", json.RawMessage(`{"body":"a2"}`))
	if err != nil {
		t.Fatal(err)
	}
	if exts, _ := c.ForwardExtremities(ctx, roomID); !slices.Equal(exts, []string{a2}) {
		t.Fatalf("extremities after a2: %v", exts)
	}

	// Rejected: a user who is not in the room; a power levels change rob may not make.
	stranger := "@eve:" + remoteServer
	bad1 := r.event(stranger, "m.room.message", nil, map[string]string{"body": "x"}, nil)
	bad2 := r.event(rob, room.TypePowerLevels, ptr(""), map[string]any{"users": map[string]int{rob: 100}}, nil)
	for _, o := range r.receive(bad1, bad2) {
		var rej *room.RejectedError
		if !errors.As(o.Err, &rej) {
			t.Fatalf("%s: %+v, want rejected", o.EventID, o)
		}
		if e := stored(o.EventID); !e.Rejected || e.StreamPos != 0 {
			t.Fatalf("rejected event stored as %+v", e)
		}
	}
	// An event citing a rejected event as auth event is rejected too.
	citing := r.event(rob, "m.room.message", nil, map[string]string{"body": "y"}, nil)
	pl, _ := c.CurrentStateEvent(ctx, roomID, room.TypePowerLevels, "")
	auth := slices.DeleteFunc(slices.Clone(citing.AuthEvents), func(id string) bool { return id == pl })
	citing2, err := event.Build(v, event.Proto{RoomID: roomID, Sender: rob, Type: "m.room.message", Content: json.RawMessage(`{}`),
		PrevEvents: citing.PrevEvents, AuthEvents: append(auth, bad2.EventID), Depth: citing.Depth,
		OriginServerTS: 1}, remoteServer, "ed25519:r", rkey)
	if err != nil {
		t.Fatal(err)
	}
	var rej *room.RejectedError
	if o := r.receive(citing2)[0]; !errors.As(o.Err, &rej) || !strings.Contains(rej.Reason, "was rejected") {
		t.Fatalf("event citing a rejected auth event: %+v", o)
	}

	// Missing prev events: nothing stored; with the state before it given, accepted as a new
	// forward extremity.
	lost := r.event(rob, "m.room.message", nil, map[string]string{"body": "lost"}, nil)
	after, err := event.Build(v, event.Proto{RoomID: roomID, Sender: rob, Type: "m.room.message", Content: json.RawMessage(`{"body":"after the gap"}`),
		PrevEvents: []string{lost.EventID}, AuthEvents: lost.AuthEvents, Depth: lost.Depth + 1, OriginServerTS: 2}, remoteServer, "ed25519:r", rkey)
	if err != nil {
		t.Fatal(err)
	}
	if o := r.receive(after)[0]; !errors.Is(o.Err, room.ErrMissingPrevEvents) {
		t.Fatalf("gap: %+v", o)
	}
	if _, err := c.Event(ctx, after.EventID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("event after a gap stored: %v", err)
	}
	cur, _ := c.CurrentState(ctx, roomID)
	outs, err := svc.ReceivePDUs(ctx, roomID, []room.Incoming{{PDU: after, StateBefore: cur}})
	if err != nil || outs[0].Err != nil {
		t.Fatalf("with state before: %+v, %v", outs, err)
	}
	if exts, _ := c.ForwardExtremities(ctx, roomID); !slices.Contains(exts, after.EventID) {
		t.Fatalf("extremities %v lack the event after the gap", exts)
	}

	// An outlier that arrives again in the timeline joins it.
	o1 := r.event(rob, "m.room.message", nil, map[string]string{"body": "first an outlier"}, nil)
	if _, err := svc.ReceiveOutliers(ctx, roomID, v, []*event.PDU{o1}); err != nil {
		t.Fatal(err)
	}
	if e := stored(o1.EventID); !e.Outlier || e.StreamPos != 0 {
		t.Fatalf("outlier stored as %+v", e)
	}
	if o := r.receive(o1)[0]; o.Err != nil || o.Duplicate {
		t.Fatalf("outlier again: %+v", o)
	}
	if e := stored(o1.EventID); e.Outlier || e.StreamPos == 0 {
		t.Fatalf("upgraded outlier stored as %+v", e)
	}

	// Soft failure: alice bans rob; his event placed before the ban is stored, soft-failed.
	before, _ := c.ForwardExtremities(ctx, roomID)
	if _, err := svc.Membership(ctx, roomID, sender(alice), rob, room.MembershipBan, "", room.MemberProfile{}, false); err != nil {
		t.Fatal(err)
	}
	evade := r.event(rob, "m.room.message", nil, map[string]string{"body": "evading"}, before)
	if o := r.receive(evade)[0]; o.Err != nil || !o.SoftFailed {
		t.Fatalf("ban evasion: %+v", o)
	}
	if e := stored(evade.EventID); !e.SoftFailed || e.StreamPos == 0 {
		t.Fatalf("soft-failed event stored as %+v", e)
	}
	if exts, _ := c.ForwardExtremities(ctx, roomID); slices.Contains(exts, evade.EventID) {
		t.Fatalf("soft-failed event is a forward extremity")
	}
}

func ptr(s string) *string { return &s }
