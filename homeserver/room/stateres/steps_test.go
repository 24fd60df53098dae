package stateres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// Tests of single steps on small hand-made graphs.

// graph builds events by name: "A<-B,C" style is too terse, so each event is spelt out.
type graph struct {
	v      event.Version
	events map[string]*event.PDU
}

func newGraph(v event.Version) *graph {
	g := &graph{v: v, events: map[string]*event.PDU{}}
	g.add("create", alice, room.TypeCreate, sk(""), `{"creator":"@alice:example.com"}`, 0)
	return g
}

func (g *graph) add(name, sender, typ string, stateKey *string, content string, ts int64, auth ...string) *event.PDU {
	ev := &event.PDU{EventID: "$" + name, RoomID: "!room:example.com", Sender: sender, Type: typ, StateKey: stateKey,
		Content: json.RawMessage(content), OriginServerTS: ts, Version: g.v, PrevEvents: []string{}, AuthEvents: []string{}}
	for _, a := range auth {
		ev.AuthEvents = append(ev.AuthEvents, "$"+a)
	}
	g.events[ev.EventID] = ev
	return ev
}

func (g *graph) fetch(_ context.Context, id string) (*event.PDU, error) {
	if ev, ok := g.events[id]; ok {
		return ev, nil
	}
	return nil, ErrEventNotFound
}

func (g *graph) resolution(t *testing.T) *resolution {
	t.Helper()
	r := &Resolver{Version: g.v, Fetch: g.fetch}
	s, err := r.newResolution(context.Background(), []StateMap{{{Type: room.TypeCreate}: "$create"}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func names(evs []*event.PDU) string {
	var out []string
	for _, ev := range evs {
		out = append(out, strings.TrimPrefix(ev.EventID, "$"))
	}
	return strings.Join(out, " ")
}

func TestSeparate(t *testing.T) {
	k := func(typ, key string) room.StateKeyTuple { return room.StateKeyTuple{Type: typ, StateKey: key} }
	s1 := StateMap{k("a", ""): "$1", k("b", ""): "$2", k("c", ""): "$3"}
	s2 := StateMap{k("a", ""): "$1", k("b", ""): "$4", k("d", ""): "$5"}
	s3 := StateMap{k("a", ""): "$1", k("b", ""): "$2", k("d", ""): "$5"}
	unconflicted, conflicted := separate([]StateMap{s1, s2, s3})
	if describe(unconflicted) != "a|=1" {
		t.Errorf("unconflicted = %s", describe(unconflicted))
	}
	want := map[room.StateKeyTuple]string{k("b", ""): "$2 $4", k("c", ""): "$3", k("d", ""): "$5"}
	if len(conflicted) != len(want) {
		t.Errorf("conflicted = %v", conflicted)
	}
	for key, ids := range want {
		if strings.Join(conflicted[key], " ") != ids {
			t.Errorf("conflicted[%v] = %v, want %s", key, conflicted[key], ids)
		}
	}
}

// TestPowerOrderLexicographic: Kahn's algorithm taking the smallest ready event. With equal power
// and timestamps, the event ID decides: l, m, n, p cite o; m also cites n.
func TestPowerOrderLexicographic(t *testing.T) {
	g := newGraph(event.V6)
	jr := func(name string, auth ...string) *event.PDU {
		return g.add(name, bob, room.TypeJoinRules, sk(""), `{"join_rule":"public"}`, 5, auth...)
	}
	x := []*event.PDU{jr("l", "o"), jr("m", "n", "o"), jr("n", "o"), jr("o"), jr("p", "o")}
	inX := map[string]bool{}
	for _, ev := range x {
		inX[ev.EventID] = true
	}
	got, err := g.resolution(t).reverseTopologicalPowerOrder(x, inX)
	if err != nil {
		t.Fatal(err)
	}
	if names(got) != "o l n m p" {
		t.Errorf("order = %s, want o l n m p", names(got))
	}
}

// TestPowerOrderTieBreaks: among ready events, higher sender power first (from each event's own
// power levels auth event), then earlier origin_server_ts, then smaller event ID; an event still
// waits for the events of the set in its auth chain, even through events outside the set.
func TestPowerOrderTieBreaks(t *testing.T) {
	g := newGraph(event.V6)
	g.add("pl", alice, room.TypePowerLevels, sk(""), `{"users":{"@alice:example.com":100,"@bob:example.com":50}}`, 1, "create")
	x := []*event.PDU{
		g.add("c-bob-late", bob, room.TypeJoinRules, sk(""), `{}`, 9, "create", "pl"),
		g.add("b-bob-early", bob, room.TypeJoinRules, sk(""), `{}`, 3, "create", "pl"),
		g.add("a-charlie", charlie, room.TypeJoinRules, sk(""), `{}`, 1, "create", "pl"),
		g.add("z-alice", alice, room.TypeJoinRules, sk(""), `{}`, 7, "create", "pl"),
		g.add("y-alice-same-ts", alice, room.TypeJoinRules, sk(""), `{}`, 7, "create", "pl"),
		g.add("no-pl-alice", alice, room.TypeJoinRules, sk(""), `{}`, 50, "create"), // creator: 100
		g.add("no-pl-bob", bob, room.TypeJoinRules, sk(""), `{}`, 0, "create"),      // 0
	}
	// d-after depends on a-charlie through "mid", an event outside the set.
	g.add("mid", alice, room.TypeMember, sk(alice), `{"membership":"join"}`, 2, "a-charlie")
	x = append(x, g.add("d-after", alice, room.TypeJoinRules, sk(""), `{}`, 0, "create", "pl", "mid"))
	inX := map[string]bool{}
	for _, ev := range x {
		inX[ev.EventID] = true
	}
	got, err := g.resolution(t).reverseTopologicalPowerOrder(x, inX)
	if err != nil {
		t.Fatal(err)
	}
	want := "y-alice-same-ts z-alice no-pl-alice b-bob-early c-bob-late no-pl-bob a-charlie d-after"
	if names(got) != want {
		t.Errorf("order:\n got  %s\n want %s", names(got), want)
	}
}

// TestMainlineOrder: events based on older power levels come first; events with no power levels
// in their chain come before all; then origin_server_ts, then event ID.
func TestMainlineOrder(t *testing.T) {
	g := newGraph(event.V6)
	pl := `{"users":{"@alice:example.com":100}}`
	g.add("p1", alice, room.TypePowerLevels, sk(""), pl, 1, "create")
	g.add("p2", alice, room.TypePowerLevels, sk(""), pl, 2, "create", "p1")
	g.add("p3", alice, room.TypePowerLevels, sk(""), pl, 3, "create", "p2")
	g.add("side", alice, room.TypePowerLevels, sk(""), pl, 4, "create", "p1") // off the mainline, based on p1
	events := []*event.PDU{
		g.add("on-p3", alice, "m.room.topic", sk(""), `{}`, 10, "create", "p3"),
		g.add("on-p2-late", alice, "m.room.topic", sk(""), `{}`, 30, "create", "p2"),
		g.add("on-p2-early", alice, "m.room.topic", sk(""), `{}`, 20, "create", "p2"),
		g.add("on-side", alice, "m.room.topic", sk(""), `{}`, 5, "create", "side"),
		g.add("b-none", alice, "m.room.topic", sk(""), `{}`, 99, "create"),
		g.add("a-none", alice, "m.room.topic", sk(""), `{}`, 99, "create"),
	}
	got, err := g.resolution(t).mainlineOrder(events, "$p3")
	if err != nil {
		t.Fatal(err)
	}
	want := "a-none b-none on-side on-p2-early on-p2-late on-p3"
	if names(got) != want {
		t.Errorf("order:\n got  %s\n want %s", names(got), want)
	}
	// With no resolved power levels every position is ∞: origin_server_ts order.
	got, _ = g.resolution(t).mainlineOrder(events, "")
	if names(got) != "on-side on-p3 on-p2-early on-p2-late a-none b-none" {
		t.Errorf("order without power levels: %s", names(got))
	}
}

// TestIterativeAuthChecks: keys missing from the partial state come from the event's auth
// events, unless those were rejected.
func TestIterativeAuthChecks(t *testing.T) {
	g := newGraph(event.V6)
	g.add("join-alice", alice, room.TypeMember, sk(alice), `{"membership":"join"}`, 1, "create")
	g.add("pl", alice, room.TypePowerLevels, sk(""), `{"users":{"@alice:example.com":100}}`, 2, "create", "join-alice")
	topic := g.add("topic", alice, "m.room.topic", sk(""), `{}`, 3, "create", "join-alice", "pl")

	for _, tc := range []struct {
		name     string
		rejected string
		want     bool
	}{
		{"auth events used", "", true},
		{"rejected auth event not used", "$join-alice", false},
	} {
		r := &Resolver{Version: g.v, Fetch: g.fetch, IsRejected: func(id string) bool { return id == tc.rejected }}
		s, _ := r.newResolution(context.Background(), []StateMap{{{Type: room.TypeCreate}: "$create"}})
		p := newPartialState(StateMap{{Type: room.TypeCreate}: "$create"})
		if err := s.iterativeAuthChecks(p, []*event.PDU{topic}); err != nil {
			t.Fatal(err)
		}
		if got := p.get(room.StateKeyTuple{Type: "m.room.topic"}) == "$topic"; got != tc.want {
			t.Errorf("%s: topic applied = %v", tc.name, got)
		}
	}

	// The partial state wins over the auth events: alice has left there.
	g.add("leave-alice", alice, room.TypeMember, sk(alice), `{"membership":"leave"}`, 4, "create", "join-alice", "pl")
	s := g.resolution(t)
	p := newPartialState(StateMap{{Type: room.TypeCreate}: "$create", {Type: room.TypeMember, StateKey: alice}: "$leave-alice"})
	if err := s.iterativeAuthChecks(p, []*event.PDU{topic}); err != nil {
		t.Fatal(err)
	}
	if p.get(room.StateKeyTuple{Type: "m.room.topic"}) != "" {
		t.Errorf("topic applied though its sender has left in the partial state")
	}
}

// TestConflictedSubgraph: the events on auth paths between conflicted events, and not the ones
// beside or below them.
func TestConflictedSubgraph(t *testing.T) {
	g := newGraph(event.V12)
	m := func(name string, auth ...string) {
		g.add(name, alice, "m.custom", sk(name), `{}`, 1, auth...)
	}
	m("root")
	m("c1", "root")
	m("a", "c1")
	m("b", "a")
	m("side", "root")
	m("c2", "b", "side")
	m("c3", "side") // conflicted, with no conflicted event below it
	m("top", "c2")  // above every conflicted event
	s := g.resolution(t)
	conflicted := map[string]bool{"$c1": true, "$c2": true, "$c3": true}
	ancestors := map[string]bool{}
	for _, id := range []string{"$root", "$c1", "$a", "$b", "$side", "$c2", "$c3"} {
		ancestors[id] = true
	}
	sub, err := s.conflictedSubgraph(conflicted, ancestors)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range []string{"$root", "$c1", "$a", "$b", "$side", "$c2", "$c3", "$top"} {
		if sub[id] {
			got = append(got, id)
		}
	}
	if fmt.Sprint(got) != "[$c1 $a $b $c2 $c3]" {
		t.Errorf("subgraph = %v", got)
	}
}

func TestResolveErrors(t *testing.T) {
	g := newGraph(event.V6)
	k := room.StateKeyTuple{Type: "m.room.topic"}
	g.add("t1", alice, "m.room.topic", sk(""), `{}`, 1, "create")
	g.add("t2", alice, "m.room.topic", sk(""), `{}`, 2, "create")
	create := room.StateKeyTuple{Type: room.TypeCreate}
	ctx := context.Background()

	if _, err := Resolve(ctx, event.V6, []StateMap{{k: "$t1"}, {k: "$t2"}}, nil, g.fetch); err == nil {
		t.Error("no error without a create event")
	}
	if _, err := Resolve(ctx, event.V6, []StateMap{{create: "$create", k: "$t1"}, {create: "$x", k: "$t2"}}, nil, g.fetch); err == nil {
		t.Error("no error for two create events")
	}
	boom := errors.New("storage down")
	failing := func(_ context.Context, id string) (*event.PDU, error) {
		if id == "$t2" {
			return nil, boom
		}
		return g.fetch(ctx, id)
	}
	if _, err := Resolve(ctx, event.V6, []StateMap{{create: "$create", k: "$t1"}, {create: "$create", k: "$t2"}}, nil, failing); !errors.Is(err, boom) {
		t.Errorf("fetch error not returned: %v", err)
	}
	g.events["$elsewhere"] = &event.PDU{EventID: "$elsewhere", RoomID: "!other:example.com", Type: "m.room.topic", StateKey: sk(""), Content: json.RawMessage(`{}`)}
	if _, err := Resolve(ctx, event.V6, []StateMap{{create: "$create", k: "$t1"}, {create: "$create", k: "$elsewhere"}}, nil, g.fetch); err == nil {
		t.Error("no error for an event of another room")
	}
	// An event the fetcher does not have is left out.
	g.add("join-alice", alice, room.TypeMember, sk(alice), `{"membership":"join"}`, 1, "create")
	ja := room.StateKeyTuple{Type: room.TypeMember, StateKey: alice}
	g.events["$t1"].AuthEvents = []string{"$create", "$join-alice"}
	got, err := Resolve(ctx, event.V6, []StateMap{{create: "$create", ja: "$join-alice", k: "$t1"}, {create: "$create", ja: "$join-alice", k: "$missing"}}, nil, g.fetch)
	if err != nil || got[k] != "$t1" {
		t.Errorf("missing event: %v %v", describe(got), err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	big := StateMap{create: "$create"}
	for i := 0; i < 3000; i++ {
		id := fmt.Sprintf("$m%d", i)
		g.add(id[1:], alice, "m.custom", sk(id), `{}`, 1, "create")
		big[room.StateKeyTuple{Type: "m.custom", StateKey: id}] = id
	}
	if _, err := Resolve(cancelled, event.V6, []StateMap{big, {create: "$create"}}, nil, g.fetch); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}
