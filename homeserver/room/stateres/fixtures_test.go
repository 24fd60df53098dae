package stateres

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// fixture is a state resolution case with explicit events and states (testdata/*.json): the
// events' auth_events are given, not derived, so a case can set up states no honest server would
// produce.
type fixture struct {
	Description string `json:"description"`
	Events      []struct {
		ID       string          `json:"id"`
		Sender   string          `json:"sender"`
		Type     string          `json:"type"`
		StateKey *string         `json:"state_key"`
		Content  json.RawMessage `json:"content"`
		TS       int64           `json:"ts"`
		Prev     []string        `json:"prev"`
		Auth     []string        `json:"auth"`
	} `json:"events"`
	States   [][]string          `json:"states"`
	Expected map[string][]string `json:"expected"` // "v2", "v2.1"
}

// build turns the fixture into events of room version v: the create event's content gets the
// version (and a creator before v11); from v12 events do not cite the create event and the
// creator is not listed in power levels.
func (f *fixture) build(t *testing.T, v event.Version) *dag {
	t.Helper()
	d := &dag{v: v, roomID: "!room:example.com", events: map[string]*event.PDU{}}
	if v.RoomIDFromCreateEvent() {
		d.roomID = "!create"
	}
	for _, e := range f.Events {
		n := node{id: e.ID, sender: e.Sender, typ: e.Type, stateKey: e.StateKey, content: string(e.Content)}
		pdu := &event.PDU{
			EventID: eventID(e.ID), RoomID: d.roomID, Sender: e.Sender, Type: e.Type, StateKey: e.StateKey,
			Content: json.RawMessage(adapt(v, n)), OriginServerTS: e.TS, Version: v,
			PrevEvents: []string{}, AuthEvents: []string{},
		}
		if e.Type == room.TypeCreate && v.RoomIDFromCreateEvent() {
			pdu.RoomID = ""
		}
		for _, p := range e.Prev {
			pdu.PrevEvents = append(pdu.PrevEvents, eventID(p))
		}
		for _, a := range e.Auth {
			if a == "create" && !v.CreateEventInAuthEvents() {
				continue
			}
			pdu.AuthEvents = append(pdu.AuthEvents, eventID(a))
		}
		d.events[pdu.EventID] = pdu
	}
	return d
}

func (f *fixture) states(d *dag) []StateMap {
	var out []StateMap
	for _, ids := range f.States {
		st := StateMap{}
		for _, id := range ids {
			ev := d.events[eventID(id)]
			st[keyOf(ev)] = ev.EventID
		}
		out = append(out, st)
	}
	return out
}

// walkAuthChain is an AuthChainFunc over the fixture's events, to run Resolve through that path
// too.
func (d *dag) walkAuthChain(_ context.Context, ids []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	stack := append([]string(nil), ids...)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ev := d.events[id]
		if ev == nil {
			continue
		}
		for _, a := range ev.AuthEvents {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
				stack = append(stack, a)
			}
		}
	}
	return out, nil
}

func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var f fixture
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, v := range []event.Version{event.V6, event.V10, event.V11, event.V12} {
			t.Run(filepath.Base(file)+"/"+v.ID(), func(t *testing.T) {
				d := f.build(t, v)
				algo := "v2"
				if v.StateResV21() {
					algo = "v2.1"
				}
				want := StateMap{}
				for _, id := range f.Expected[algo] {
					ev := d.events[eventID(id)]
					want[keyOf(ev)] = ev.EventID
				}
				for _, chain := range []AuthChainFunc{nil, d.walkAuthChain} {
					got, err := Resolve(context.Background(), v, f.states(d), chain, d.fetch)
					if err != nil {
						t.Fatal(err)
					}
					if describe(got) != describe(want) {
						t.Errorf("%s (auth chains from storage: %v):\n got  %s\n want %s", algo, chain != nil, describe(got), describe(want))
					}
				}
			})
		}
	}
}
