package stateres

import (
	"context"
	"math/rand"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// scenario is a classic state resolution case (the ones the Synapse, Ruma/Conduit and
// gomatrixserverlib suites share), as a DAG from the initial events to END, with the state
// expected after END (beyond what is unchanged since START).
type scenario struct {
	name     string
	events   []node
	edges    [][]string
	expected []string
	// expectedV21 overrides expected in v12 rooms when state resolution v2.1 (or the creators'
	// infinite power) decides differently.
	expectedV21 []string
}

const (
	plAlice100Bob50        = `{"users":{"@alice:example.com":100,"@bob:example.com":50}}`
	plAlice100Bob0         = `{"users":{"@alice:example.com":100,"@bob:example.com":0}}`
	plAlice100Bob50Char50  = `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50}}`
	plAlice100Bob50Char0   = `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":0}}`
	plAlice100Bob50PLsAt00 = `{"users":{"@alice:example.com":100,"@bob:example.com":50},"events":{"m.room.power_levels":100}}`
)

var scenarios = []scenario{
	{
		// Alice bans Bob while Bob, still a moderator on his branch, re-sends the power levels:
		// the ban wins and Bob's power levels event, authorised only by his old power, is dropped.
		name: "ban vs power levels",
		events: []node{
			state("PA", alice, room.TypePowerLevels, plAlice100Bob50),
			member("MA", alice, alice, "join"),
			member("MB", alice, bob, "ban"),
			state("PB", bob, room.TypePowerLevels, plAlice100Bob50),
		},
		edges:    [][]string{{"END", "MB", "MA", "PA", "START"}, {"END", "PB", "PA"}},
		expected: []string{"PA", "MA", "MB"},
	},
	{
		// Alice makes the room private while Evelyn joins on another branch: the join rule wins
		// and the join that relied on the old rule is dropped.
		name: "join rule evasion",
		events: []node{
			state("JR", alice, room.TypeJoinRules, `{"join_rule":"private"}`),
			member("ME", ella, ella, "join"),
		},
		edges:    [][]string{{"END", "JR", "START"}, {"END", "ME", "START"}},
		expected: []string{"JR"},
	},
	{
		// A chain of moderator power level changes on one branch, the start of it on the other:
		// the chain stands.
		name: "offtopic power levels",
		events: []node{
			state("PA", alice, room.TypePowerLevels, plAlice100Bob50),
			state("PB", bob, room.TypePowerLevels, plAlice100Bob50Char50),
			state("PC", charlie, room.TypePowerLevels, plAlice100Bob50Char0),
		},
		edges:    [][]string{{"END", "PC", "PB", "PA", "START"}, {"END", "PA"}},
		expected: []string{"PC"},
	},
	{
		// Alice demotes Bob; on the other branch Bob re-asserts his level and sets the topic. The
		// demotion wins, so do Alice's power levels and topic.
		name: "topic basic",
		events: []node{
			state("T1", alice, "m.room.topic", `{}`),
			state("PA1", alice, room.TypePowerLevels, plAlice100Bob50),
			state("T2", alice, "m.room.topic", `{}`),
			state("PA2", alice, room.TypePowerLevels, plAlice100Bob0),
			state("PB", bob, room.TypePowerLevels, plAlice100Bob50),
			state("T3", bob, "m.room.topic", `{}`),
		},
		edges:    [][]string{{"END", "PA2", "T2", "PA1", "T1", "START"}, {"END", "T3", "PB", "PA1"}},
		expected: []string{"PA2", "T2"},
	},
	{
		// Bob sets the topic and is banned on one branch; the other branch only has the first
		// topic. Bob's topic does not survive his ban.
		name: "topic reset",
		events: []node{
			state("T1", alice, "m.room.topic", `{}`),
			state("PA", alice, room.TypePowerLevels, plAlice100Bob50),
			state("T2", bob, "m.room.topic", `{}`),
			member("MB", alice, bob, "ban"),
		},
		edges:    [][]string{{"END", "MB", "T2", "PA", "T1", "START"}, {"END", "T1"}},
		expected: []string{"T1", "MB", "PA"},
	},
	{
		// As topic basic, with a merge in the middle and a later topic from Alice.
		name: "topic",
		events: []node{
			state("T1", alice, "m.room.topic", `{}`),
			state("PA1", alice, room.TypePowerLevels, plAlice100Bob50),
			state("T2", alice, "m.room.topic", `{}`),
			state("PA2", alice, room.TypePowerLevels, plAlice100Bob0),
			state("PB", bob, room.TypePowerLevels, plAlice100Bob50),
			state("T3", bob, "m.room.topic", `{}`),
			{id: "MZ1", sender: zara, typ: "m.room.message", content: `{}`},
			state("T4", alice, "m.room.topic", `{}`),
		},
		edges: [][]string{
			{"END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"},
			{"END", "MZ1", "T3", "PB", "PA1"},
		},
		expected: []string{"T4", "PA2"},
	},
	{
		// The mainline ordering: T3 is based on the newest power levels, so it wins over T4 even
		// though T4 was sent later.
		name: "mainline sort",
		events: []node{
			state("T1", alice, "m.room.topic", `{}`),
			state("PA1", alice, room.TypePowerLevels, plAlice100Bob50),
			state("T2", alice, "m.room.topic", `{}`),
			state("PA2", alice, room.TypePowerLevels, plAlice100Bob50PLsAt00),
			state("PB", bob, room.TypePowerLevels, plAlice100Bob50),
			state("T3", bob, "m.room.topic", `{}`),
			state("T4", alice, "m.room.topic", `{}`),
		},
		edges: [][]string{
			{"END", "T3", "PA2", "T2", "PA1", "T1", "START"},
			{"END", "T4", "PB", "PA1"},
		},
		expected: []string{"T3", "PA2"},
	},
	{
		// Ella is banned on one branch and joins after the ban on a descendant branch: the ban
		// wins.
		name: "ban with auth chains",
		events: []node{
			state("PA", alice, room.TypePowerLevels, plAlice100Bob50),
			member("MB", alice, ella, "ban"),
			member("IME", ella, ella, "join"),
		},
		edges:    [][]string{{"END", "MB", "PA", "START"}, {"END", "IME", "MB"}},
		expected: []string{"PA", "MB"},
	},
	{
		// The join rule becomes invite on one branch while Ella joins on the other: the join is
		// checked against the resolved join rule and dropped.
		name: "join rule with auth chain",
		events: []node{
			state("JR", alice, room.TypeJoinRules, `{"join_rule":"invite"}`),
			member("IME", ella, ella, "join"),
		},
		edges:    [][]string{{"END", "JR", "START"}, {"END", "IME", "START"}},
		expected: []string{"JR"},
	},
	{
		// Two moderators of equal power change the power levels on two branches: equal power,
		// so the earlier event is applied first and the later one (allowed on top) wins.
		name: "power level tie by origin_server_ts",
		events: []node{
			state("PA", alice, room.TypePowerLevels, plAlice100Bob50Char50),
			state("PB", bob, room.TypePowerLevels, `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50},"events":{"m.room.topic":50}}`),
			state("PC", charlie, room.TypePowerLevels, `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50},"events":{"m.room.name":50}}`),
		},
		edges:    [][]string{{"END", "PB", "PA", "START"}, {"END", "PC", "PA"}},
		expected: []string{"PC"},
	},
	{
		// The same with equal origin_server_ts: the event ID breaks the tie ($PC > $PB).
		name: "power level tie by event ID",
		events: []node{
			state("PA", alice, room.TypePowerLevels, plAlice100Bob50Char50),
			{id: "PC", sender: bob, typ: room.TypePowerLevels, stateKey: sk(""), ts: 1000,
				content: `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50},"events":{"m.room.topic":50}}`},
			{id: "PB", sender: charlie, typ: room.TypePowerLevels, stateKey: sk(""), ts: 1000,
				content: `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50},"events":{"m.room.name":50}}`},
		},
		edges:    [][]string{{"END", "PB", "PA", "START"}, {"END", "PC", "PA"}},
		expected: []string{"PC"},
	},
	{
		// A power levels event outranks a concurrent one by a lower sender even when sent later:
		// Alice (100) demotes Bob after Bob (50) raised Charlie; Alice's is sorted first, and Bob's,
		// no longer authorised, is dropped.
		name: "power level by sender power",
		events: []node{
			state("PA", alice, room.TypePowerLevels, plAlice100Bob50),
			state("PB", bob, room.TypePowerLevels, plAlice100Bob50Char50),
			{id: "PA2", sender: alice, typ: room.TypePowerLevels, stateKey: sk(""), ts: 5000, content: plAlice100Bob0},
		},
		edges:    [][]string{{"END", "PB", "PA", "START"}, {"END", "PA2", "PA"}},
		expected: []string{"PA2"},
	},
	{
		// A kick and a concurrent message-level change: the kicked user's later topic on their
		// own branch is dropped.
		name: "kick vs topic",
		events: []node{
			state("PA", alice, room.TypePowerLevels, `{"users":{"@alice:example.com":100},"events":{"m.room.topic":0}}`),
			member("KB", alice, bob, "leave"),
			state("TB", bob, "m.room.topic", `{}`),
		},
		edges:    [][]string{{"END", "KB", "PA", "START"}, {"END", "TB", "PA"}},
		expected: []string{"PA", "KB"},
	},
}

func TestScenarios(t *testing.T) {
	for _, v := range []event.Version{event.V6, event.V8, event.V10, event.V11, event.V12} {
		for _, sc := range scenarios {
			t.Run(v.ID()+"/"+sc.name, func(t *testing.T) {
				d := buildDAG(t, v, sc.events, sc.edges)
				want := sc.expected
				if v.StateResV21() && sc.expectedV21 != nil {
					want = sc.expectedV21
				}
				expected := d.expectedState(t, want)
				if got := d.changedAtEnd(expected); describe(got) != describe(expected) {
					t.Errorf("state at END:\n got  %s\n want %s", describe(got), describe(expected))
				}
			})
		}
	}
}

// TestScenariosOrderIndependent re-resolves every merge of every scenario with the states in
// every order and the events' auth_events and prev_events shuffled: the result must not change.
func TestScenariosOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, v := range []event.Version{event.V6, event.V11, event.V12} {
		for _, sc := range scenarios {
			d := buildDAG(t, v, sc.events, sc.edges)
			for node, states := range d.merges {
				want := describe(d.stateAfter[node])
				// The state after a message merge is the resolved state itself.
				if ev := d.events[eventID(node)]; ev.StateKey != nil {
					continue
				}
				for i := 0; i < 20; i++ {
					sd := d.shuffled(rng)
					perm := append([]StateMap(nil), states...)
					rng.Shuffle(len(perm), func(a, b int) { perm[a], perm[b] = perm[b], perm[a] })
					got, err := Resolve(context.Background(), v, perm, nil, sd.fetch)
					if err != nil {
						t.Fatalf("%s/%s: %v", v, sc.name, err)
					}
					if describe(got) != want {
						t.Fatalf("%s/%s at %s: order changed the result:\n got  %s\n want %s", v, sc.name, node, describe(got), want)
					}
				}
			}
		}
	}
}
