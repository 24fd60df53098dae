package stateres

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// The DAG harness: a scenario is a list of events and prev_events chains. Events are created in
// topological order (ties by name), each with origin_server_ts one more than the last, the state
// before it resolved from the states after its prev_events with Resolve, and its auth_events picked
// from that state by the auth events selection algorithm (as the Synapse and Ruma suites build
// theirs). The test compares the state after END with the expected events.

const (
	alice   = "@alice:example.com"
	bob     = "@bob:example.com"
	charlie = "@charlie:example.com"
	ella    = "@ella:example.com"
	zara    = "@zara:example.com"
)

type node struct {
	id, sender, typ string
	stateKey        *string
	content         string
	ts              int64    // 0: next in creation order
	auth            []string // nil: picked from the state before; else these nodes, as given
}

func sk(s string) *string { return &s }

func member(id, sender, target, membership string) node {
	return node{id: id, sender: sender, typ: room.TypeMember, stateKey: sk(target), content: `{"membership":"` + membership + `"}`}
}

func state(id, sender, typ, content string) node {
	return node{id: id, sender: sender, typ: typ, stateKey: sk(""), content: content}
}

// initialEvents start every scenario: alice creates a public room that bob, charlie and zara join.
var initialEvents = []node{
	state("CREATE", alice, room.TypeCreate, `{}`),
	member("IMA", alice, alice, "join"),
	state("IPOWER", alice, room.TypePowerLevels, `{"users":{"@alice:example.com":100}}`),
	state("IJR", alice, room.TypeJoinRules, `{"join_rule":"public"}`),
	member("IMB", bob, bob, "join"),
	member("IMC", charlie, charlie, "join"),
	member("IMZ", zara, zara, "join"),
	{id: "START", sender: zara, typ: "m.room.message", content: `{}`},
	{id: "END", sender: zara, typ: "m.room.message", content: `{}`},
}

var initialEdges = []string{"START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"}

// dag is a built scenario.
type dag struct {
	v          event.Version
	roomID     string
	events     map[string]*event.PDU // by event ID
	stateAfter map[string]StateMap   // by node
	prevs      map[string][]string   // node -> prev nodes
	merges     map[string][]StateMap // node -> the states that were resolved for it
}

func eventID(node string) string { return "$" + node }

// adapt rewrites content for the room version: the creator in m.room.create before v11, the room
// version, and no creator in power levels users from v12 (creators may not be listed there).
func adapt(v event.Version, n node) string {
	switch n.typ {
	case room.TypeCreate:
		var c map[string]any
		_ = json.Unmarshal([]byte(n.content), &c)
		if c == nil {
			c = map[string]any{}
		}
		c["room_version"] = v.ID()
		if v.CreatorInContent() {
			if _, ok := c["creator"]; !ok {
				c["creator"] = n.sender
			}
		}
		b, _ := json.Marshal(c)
		return string(b)
	case room.TypePowerLevels:
		if !v.PrivilegedCreators() {
			return n.content
		}
		var c map[string]any
		_ = json.Unmarshal([]byte(n.content), &c)
		if users, ok := c["users"].(map[string]any); ok {
			delete(users, alice)
		}
		b, _ := json.Marshal(c)
		return string(b)
	}
	return n.content
}

func (d *dag) fetch(_ context.Context, id string) (*event.PDU, error) {
	if ev, ok := d.events[id]; ok {
		return ev, nil
	}
	return nil, fmt.Errorf("%s: %w", id, ErrEventNotFound)
}

func buildDAG(t testing.TB, v event.Version, nodes []node, edges [][]string) *dag {
	t.Helper()
	d := &dag{
		v:          v,
		roomID:     "!room:example.com",
		events:     map[string]*event.PDU{},
		stateAfter: map[string]StateMap{},
		prevs:      map[string][]string{},
		merges:     map[string][]StateMap{},
	}
	if v.RoomIDFromCreateEvent() {
		d.roomID = "!CREATE"
	}
	byID := map[string]node{}
	var order []string
	for _, n := range append(slices.Clone(initialEvents), nodes...) {
		if _, dup := byID[n.id]; !dup {
			order = append(order, n.id)
		}
		byID[n.id] = n
		d.prevs[n.id] = nil
	}
	addChain := func(chain []string) {
		for i := 0; i+1 < len(chain); i++ {
			a, b := chain[i], chain[i+1]
			if !slices.Contains(d.prevs[a], b) {
				d.prevs[a] = append(d.prevs[a], b)
			}
		}
	}
	addChain(initialEdges)
	for _, chain := range edges {
		addChain(chain)
	}

	done := map[string]bool{}
	var ts int64
	for len(done) < len(order) {
		// The smallest node whose prev events are all created.
		next := ""
		for _, id := range order {
			if done[id] {
				continue
			}
			ready := true
			for _, p := range d.prevs[id] {
				if !done[p] {
					ready = false
					break
				}
			}
			if ready && (next == "" || id < next) {
				next = id
			}
		}
		if next == "" {
			t.Fatalf("the scenario's prev_events form a cycle")
		}
		n := byID[next]
		prevs := slices.Clone(d.prevs[next])
		sort.Strings(prevs)

		var before StateMap
		switch len(prevs) {
		case 0:
			before = StateMap{}
		case 1:
			before = maps.Clone(d.stateAfter[prevs[0]])
		default:
			var states []StateMap
			for _, p := range prevs {
				states = append(states, d.stateAfter[p])
			}
			d.merges[next] = states
			var err error
			before, err = Resolve(context.Background(), v, states, nil, d.fetch)
			if err != nil {
				t.Fatalf("resolving the state before %s: %v", next, err)
			}
		}

		ts++
		pdu := &event.PDU{
			EventID:        eventID(next),
			RoomID:         d.roomID,
			Sender:         n.sender,
			Type:           n.typ,
			StateKey:       n.stateKey,
			Content:        json.RawMessage(adapt(v, n)),
			OriginServerTS: ts,
			Depth:          ts,
			Version:        v,
			PrevEvents:     []string{},
			AuthEvents:     []string{},
		}
		if n.ts != 0 {
			pdu.OriginServerTS = n.ts
		}
		if n.typ == room.TypeCreate && v.RoomIDFromCreateEvent() {
			pdu.RoomID = ""
		}
		for _, p := range prevs {
			pdu.PrevEvents = append(pdu.PrevEvents, eventID(p))
		}
		if n.auth != nil {
			for _, a := range n.auth {
				pdu.AuthEvents = append(pdu.AuthEvents, eventID(a))
			}
		} else {
			for _, k := range room.AuthEventsNeeded(v, pdu) {
				if id, ok := before[k]; ok {
					pdu.AuthEvents = append(pdu.AuthEvents, id)
				}
			}
		}
		d.events[pdu.EventID] = pdu
		after := before
		if n.stateKey != nil {
			after[room.StateKeyTuple{Type: n.typ, StateKey: *n.stateKey}] = pdu.EventID
		}
		d.stateAfter[next] = after
		done[next] = true
	}
	return d
}

// changedAtEnd is the state after END restricted to the keys of expected and the keys that
// changed since START.
func (d *dag) changedAtEnd(expected StateMap) StateMap {
	start, end := d.stateAfter["START"], d.stateAfter["END"]
	out := StateMap{}
	for k, id := range end {
		if _, want := expected[k]; want || start[k] != id {
			out[k] = id
		}
	}
	return out
}

// expectedState maps node names to their state keys.
func (d *dag) expectedState(t testing.TB, nodes []string) StateMap {
	t.Helper()
	out := StateMap{}
	for _, n := range nodes {
		ev := d.events[eventID(n)]
		if ev == nil || ev.StateKey == nil {
			t.Fatalf("expected node %s is not a state event of the scenario", n)
		}
		out[keyOf(ev)] = ev.EventID
	}
	return out
}

func describe(s StateMap) string {
	var parts []string
	for k, id := range s {
		parts = append(parts, fmt.Sprintf("%s|%s=%s", k.Type, k.StateKey, strings.TrimPrefix(id, "$")))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// shuffled is a copy of d whose events list their auth_events and prev_events in a random order,
// for checking that nothing depends on that order.
func (d *dag) shuffled(rng *rand.Rand) *dag {
	c := *d
	c.events = make(map[string]*event.PDU, len(d.events))
	for id, ev := range d.events {
		cp := *ev
		cp.AuthEvents = slices.Clone(ev.AuthEvents)
		cp.PrevEvents = slices.Clone(ev.PrevEvents)
		rng.Shuffle(len(cp.AuthEvents), func(i, j int) { cp.AuthEvents[i], cp.AuthEvents[j] = cp.AuthEvents[j], cp.AuthEvents[i] })
		rng.Shuffle(len(cp.PrevEvents), func(i, j int) { cp.PrevEvents[i], cp.PrevEvents[j] = cp.PrevEvents[j], cp.PrevEvents[i] })
		c.events[id] = &cp
	}
	return &c
}
