package room_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// Backfill between two room services on two stores, without HTTP: src serves BackfillForServer,
// dst receives with ReceiveBackfill through a Backfiller that calls src directly (federation/
// backfill_test.go runs the same over the network).

const srcServer, dstServer = "src.example", "dst.example"

// directBackfiller answers dst's backfill from src, as federation.API does over HTTP.
type directBackfiller struct {
	t        *testing.T
	src, dst *room.Service
	v        event.Version
	calls    atomic.Int32
	empty    atomic.Bool // answer nothing (a server with no more history)
}

func (b *directBackfiller) Backfill(ctx context.Context, roomID string, servers, from []string, limit int) (int, error) {
	b.calls.Add(1)
	if !slices.Equal(servers, []string{srcServer}) {
		b.t.Errorf("backfill asks %v", servers)
	}
	if b.empty.Load() {
		return 0, nil
	}
	raws, err := b.src.BackfillForServer(ctx, dstServer, roomID, from, limit)
	if err != nil {
		return 0, err
	}
	var in []room.Incoming
	for _, raw := range raws {
		p, err := event.Parse(b.v, raw)
		if err != nil {
			return 0, err
		}
		in = append(in, room.Incoming{PDU: p})
	}
	outs, err := b.dst.ReceiveBackfill(ctx, roomID, in)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, o := range outs {
		if errors.Is(o.Err, room.ErrMissingPrevEvents) {
			// The oldest of the answer: the state before it, from src.
			state, _, err := b.src.StateAt(ctx, dstServer, roomID, o.EventID)
			if err != nil {
				return n, err
			}
			before := storage.StateMap{}
			for _, e := range state {
				before[storage.StateKey{Type: e.Type, StateKey: *e.StateKey}] = e.EventID
			}
			again, err := b.dst.ReceiveBackfill(ctx, roomID, []room.Incoming{{PDU: in[i].PDU, StateBefore: before}})
			if err != nil {
				return n, err
			}
			o = again[0]
			// The later events were waiting for this one.
			var rest []room.Incoming
			for j := i + 1; j < len(outs); j++ {
				if outs[j].Err != nil {
					rest = append(rest, in[j])
				}
			}
			if _, err := b.dst.ReceiveBackfill(ctx, roomID, rest); err != nil {
				return n, err
			}
			n += len(rest)
		}
		if o.Err == nil && !o.Duplicate {
			n++
		}
	}
	return n, nil
}

func TestBackfillBetweenServices(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		for _, v := range []event.Version{event.V11, event.V12} {
			t.Run("v"+v.ID(), func(t *testing.T) { testBackfillBetweenServices(t, s, storagetest.Open(t, s.Backend()), v) })
		}
	})
}

func testBackfillBetweenServices(t *testing.T, srcStore, dstStore *storage.Store, v event.Version) {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	newService := func(store *storage.Store, name string) (*room.Service, ed25519.PrivateKey) {
		_, priv, _ := ed25519.GenerateKey(nil)
		svc := room.New(store, nil, room.Options{ServerName: name, Key: signing.Key{ID: "ed25519:k", Private: priv}, DefaultVersion: v,
			Resolve: resolve}, logger)
		t.Cleanup(svc.Close)
		return svc, priv
	}
	src, _ := newService(srcStore, srcServer)
	dst, dstKey := newService(dstStore, dstServer)
	var skew atomic.Int64 // dst's clock runs ahead by this much
	dst.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	alice, bob := "@alice:"+srcServer, "@bob:"+dstServer

	// alice creates a room on src and talks; bob of dst joins afterwards.
	roomID, err := src.CreateRoom(ctx, room.CreateRequest{Creator: alice, Preset: room.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 30 {
		body := fmt.Sprintf("m%d", i)
		if _, err := src.Send(ctx, roomID, sender(alice), "m.room.message", json.RawMessage(`{"body":"`+body+`"}`)); err != nil {
			t.Fatal(err)
		}
		want = append(want, body)
	}
	_, tmpl, err := src.MakeMembership(ctx, roomID, bob, room.MembershipJoin, []string{v.ID()})
	if err != nil {
		t.Fatal(err)
	}
	var tp struct {
		PrevEvents     []string        `json:"prev_events"`
		AuthEvents     []string        `json:"auth_events"`
		Depth          int64           `json:"depth"`
		Content        json.RawMessage `json:"content"`
		OriginServerTS int64           `json:"origin_server_ts"`
	}
	if err := json.Unmarshal(tmpl, &tp); err != nil {
		t.Fatal(err)
	}
	join, err := event.Build(v, event.Proto{RoomID: roomID, Sender: bob, Type: room.TypeMember, StateKey: &bob, Content: tp.Content,
		PrevEvents: tp.PrevEvents, AuthEvents: tp.AuthEvents, Depth: tp.Depth, OriginServerTS: tp.OriginServerTS}, dstServer, "ed25519:k", dstKey)
	if err != nil {
		t.Fatal(err)
	}
	if outs, err := src.ReceivePDUs(ctx, roomID, []room.Incoming{{PDU: join}}); err != nil || outs[0].Err != nil {
		t.Fatalf("join on src: %v %+v", err, outs)
	}
	state, chain, err := src.StateAt(ctx, dstServer, roomID, join.EventID)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(evs []storage.Event) []*event.PDU {
		var out []*event.PDU
		for _, e := range evs {
			p, err := event.Parse(v, e.PDU)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	if err := dst.CompleteRemoteJoin(ctx, v, roomID, parse(state), parse(chain), join); err != nil {
		t.Fatal(err)
	}
	bf := &directBackfiller{t: t, src: src, dst: dst, v: v}
	dst.SetBackfiller(bf)
	c := dstStore.Read()
	extsBefore, _ := c.ForwardExtremities(ctx, roomID)
	curBefore, _ := c.CurrentState(ctx, roomID)
	posBefore, _ := c.Position(ctx, storage.StreamEvents)

	paginate := func() ([]json.RawMessage, error) {
		var all []json.RawMessage
		from := ""
		for range 50 {
			p, err := dst.Messages(ctx, room.Reader{UserID: bob}, roomID, from, "", true, 8, nil)
			if err != nil {
				return nil, err
			}
			all = append(all, p.Chunk...)
			if p.End == "" {
				return all, nil
			}
			from = p.End
		}
		return nil, errors.New("/messages does not end")
	}
	history := func() []json.RawMessage {
		t.Helper()
		all, err := paginate()
		if err != nil {
			t.Fatal(err)
		}
		return all
	}
	bodies := func(evs []json.RawMessage) (out []string, first string) {
		for i := len(evs) - 1; i >= 0; i-- {
			var e struct {
				Type    string `json:"type"`
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			}
			_ = json.Unmarshal(evs[i], &e)
			if i == len(evs)-1 {
				first = e.Type
			}
			if e.Type == "m.room.message" {
				out = append(out, e.Content.Body)
			}
		}
		return out, first
	}

	// src has nothing for dst at first: asked once, then not again until the retry time.
	bf.empty.Store(true)
	if got, _ := bodies(history()); len(got) != 0 || bf.calls.Load() != 1 {
		t.Fatalf("with nothing to backfill: %v, %d calls", got, bf.calls.Load())
	}
	history()
	if n := bf.calls.Load(); n != 1 {
		t.Fatalf("asked again at once: %d calls", n)
	}

	// An hour later, src has it all: two readers page back at once, one backfill round serves
	// both, and both get every message in order, down to the create event.
	bf.empty.Store(false)
	skew.Store(int64(2 * time.Hour))
	var pages [2][]json.RawMessage
	var errs [2]error
	var wg sync.WaitGroup
	for i := range pages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pages[i], errs[i] = paginate()
		}()
	}
	wg.Wait()
	for i := range pages {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		got, first := bodies(pages[i])
		if !slices.Equal(got, want) || first != room.TypeCreate {
			t.Fatalf("history on dst (reader %d): %v from %s, want %v from the create event", i, got, first, want)
		}
	}
	if n := bf.calls.Load(); n != 2 {
		t.Errorf("%d backfill calls for two readers, want 1 (after the first, empty one)", n-1)
	}
	history()
	if n := bf.calls.Load(); n != 2 {
		t.Errorf("asked again after reaching the create event: %d calls", n)
	}
	if exts, err := c.BackfillExtremities(ctx, roomID); err != nil || len(exts) != 0 {
		t.Errorf("backfill extremities left: %+v, %v", exts, err)
	}

	// Nothing else moved: forward extremities, current state, the events stream.
	extsAfter, _ := c.ForwardExtremities(ctx, roomID)
	curAfter, _ := c.CurrentState(ctx, roomID)
	posAfter, _ := c.Position(ctx, storage.StreamEvents)
	if !slices.Equal(extsBefore, extsAfter) || len(curBefore) != len(curAfter) || posBefore != posAfter {
		t.Errorf("backfill moved the room: extremities %v -> %v, state %d -> %d keys, stream %d -> %d",
			extsBefore, extsAfter, len(curBefore), len(curAfter), posBefore, posAfter)
	}
	// Backfilled events sit below 0, in topological order; the outliers of the join (the create
	// event) are in the timeline now.
	evs, err := c.TimelineEvents(ctx, roomID, storage.MaxTopo, true, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].StreamPos >= evs[i-1].StreamPos {
			t.Errorf("stream positions not in topological order: %s at %d before %s at %d", evs[i].EventID, evs[i].StreamPos,
				evs[i-1].EventID, evs[i-1].StreamPos)
		}
	}
	if last := evs[len(evs)-1]; last.Type != room.TypeCreate || last.StreamPos >= 0 || last.Outlier {
		t.Errorf("oldest event %+v", last)
	}

	// A forged event of the past that fails the auth rules (a stranger's message): rejected,
	// stored as such, never shown.
	msgs, _ := c.TimelineEvents(ctx, roomID, storage.TopoPos{Depth: evs[len(evs)/2].Depth, Stream: evs[len(evs)/2].StreamPos}, true, 1)
	p0, _ := event.Parse(v, msgs[0].PDU)
	mallory := "@mallory:" + dstServer
	forged, err := event.Build(v, event.Proto{RoomID: roomID, Sender: mallory, Type: "m.room.message", Content: json.RawMessage(`{"body":"forged"}`),
		PrevEvents: []string{msgs[0].EventID}, AuthEvents: p0.AuthEvents, Depth: p0.Depth + 1, OriginServerTS: p0.OriginServerTS}, dstServer, "ed25519:k", dstKey)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := dst.ReceiveBackfill(ctx, roomID, []room.Incoming{{PDU: forged}})
	var rej *room.RejectedError
	if err != nil || !errors.As(outs[0].Err, &rej) {
		t.Fatalf("forged event of the past: %v %+v", err, outs)
	}
	if e, err := c.Event(ctx, forged.EventID); err != nil || !e.Rejected || e.StreamPos != 0 {
		t.Errorf("forged event stored as %+v, %v", e, err)
	}
	if got, _ := bodies(history()); !slices.Equal(got, want) {
		t.Errorf("history after a rejected event: %v", got)
	}
}
