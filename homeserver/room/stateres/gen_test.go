package stateres

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
)

// genRoom builds random rooms: a common history, then forks that each add state events on their
// own branch (authorised against the branch's state, as honest servers would, and auth_events
// chosen by the selection algorithm), giving states to resolve.
type genRoom struct {
	v      event.Version
	rng    *rand.Rand
	d      *dag
	ts     int64
	n      int
	users  []string
	checks *room.Checker
}

func newGenRoom(v event.Version, seed int64) *genRoom {
	g := &genRoom{
		v:      v,
		rng:    rand.New(rand.NewSource(seed)),
		d:      &dag{v: v, roomID: "!room:example.com", events: map[string]*event.PDU{}},
		checks: room.NewChecker(v, nil),
	}
	if v.RoomIDFromCreateEvent() {
		g.d.roomID = "!create"
	}
	return g
}

func (g *genRoom) user(i int) string { return fmt.Sprintf("@u%d:hs%d.example.com", i, i%7) }

// add creates an event on top of the branch state st (and prev event prev), adds it to st if the
// auth rules allow it against st, and returns it.
func (g *genRoom) add(st StateMap, prev string, sender, typ string, stateKey *string, content string) (*event.PDU, bool) {
	g.ts++
	g.n++
	id := fmt.Sprintf("$e%d", g.n)
	if typ == room.TypeCreate {
		id = "$create"
	}
	ev := &event.PDU{
		EventID: id, RoomID: g.d.roomID, Sender: sender, Type: typ, StateKey: stateKey,
		Content: json.RawMessage(content), OriginServerTS: g.ts, Depth: g.ts, Version: g.v,
		PrevEvents: []string{}, AuthEvents: []string{},
	}
	if typ == room.TypeCreate && g.v.RoomIDFromCreateEvent() {
		ev.RoomID = ""
	}
	if prev != "" {
		ev.PrevEvents = []string{prev}
	}
	for _, k := range room.AuthEventsNeeded(g.v, ev) {
		if aid, ok := st[k]; ok {
			ev.AuthEvents = append(ev.AuthEvents, aid)
		}
	}
	lookup := func(typ, sk string) *event.PDU {
		if id, ok := st[room.StateKeyTuple{Type: typ, StateKey: sk}]; ok {
			return g.d.events[id]
		}
		if typ == room.TypeCreate {
			return g.d.events["$create"]
		}
		return nil
	}
	if typ != room.TypeCreate && g.checks.Allowed(ev, lookup) != nil {
		return ev, false
	}
	g.d.events[id] = ev
	if stateKey != nil {
		st[room.StateKeyTuple{Type: typ, StateKey: *stateKey}] = id
	}
	return ev, true
}

func (g *genRoom) powerLevels(admins, mods []string, extra string) string {
	users := map[string]int{}
	for _, u := range admins {
		users[u] = 100
	}
	for _, u := range mods {
		users[u] = 50
	}
	if g.v.PrivilegedCreators() {
		delete(users, g.users[0])
	}
	b, _ := json.Marshal(users)
	return `{"users":` + string(b) + extra + `}`
}

// base creates the room with members joined; users[0] creates it, users[1..3] are moderators.
func (g *genRoom) base(members int) (StateMap, string) {
	st := StateMap{}
	g.users = make([]string, members)
	for i := range g.users {
		g.users[i] = g.user(i)
	}
	creator := g.users[0]
	createContent := `{"room_version":"` + g.v.ID() + `"}`
	if g.v.CreatorInContent() {
		createContent = `{"room_version":"` + g.v.ID() + `","creator":"` + creator + `"}`
	}
	ev, _ := g.add(st, "", creator, room.TypeCreate, sk(""), createContent)
	prev := ev.EventID
	for _, e := range []struct{ typ, sk, content string }{
		{room.TypeMember, creator, `{"membership":"join"}`},
		{room.TypePowerLevels, "", g.powerLevels([]string{creator}, g.users[1:min(4, members)], "")},
		{room.TypeJoinRules, "", `{"join_rule":"public"}`},
	} {
		ev, _ = g.add(st, prev, creator, e.typ, sk(e.sk), e.content)
		prev = ev.EventID
	}
	for _, u := range g.users[1:] {
		ev, _ = g.add(st, prev, u, room.TypeMember, sk(u), `{"membership":"join"}`)
		prev = ev.EventID
	}
	return st, prev
}

// fork adds n random state events on a branch from st (copied) and returns the branch state.
func (g *genRoom) fork(st StateMap, prev string, n int) StateMap {
	st = maps.Clone(st)
	r := g.rng
	pick := func() string {
		// Favour the creator and moderators, who can do the most.
		if r.Intn(3) == 0 {
			return g.users[r.Intn(min(4, len(g.users)))]
		}
		return g.users[r.Intn(len(g.users))]
	}
	for made := 0; made < n; {
		sender, target := pick(), pick()
		var ok bool
		var ev *event.PDU
		switch r.Intn(10) {
		case 0, 1:
			ev, ok = g.add(st, prev, sender, "m.room.topic", sk(""), fmt.Sprintf(`{"topic":"t%d"}`, r.Int()))
		case 2:
			ev, ok = g.add(st, prev, sender, room.TypePowerLevels, sk(""),
				g.powerLevels([]string{g.users[0]}, []string{pick(), pick(), g.users[1]}, fmt.Sprintf(`,"events":{"m.room.topic":%d}`, 25*r.Intn(3))))
		case 3:
			ev, ok = g.add(st, prev, sender, room.TypeMember, sk(target), `{"membership":"ban"}`)
		case 4:
			ev, ok = g.add(st, prev, sender, room.TypeMember, sk(target), `{"membership":"leave"}`)
		case 5:
			ev, ok = g.add(st, prev, target, room.TypeMember, sk(target), `{"membership":"join","displayname":"d"}`)
		case 6:
			rules := []string{"public", "invite"}
			ev, ok = g.add(st, prev, sender, room.TypeJoinRules, sk(""), `{"join_rule":"`+rules[r.Intn(2)]+`"}`)
		case 7:
			ev, ok = g.add(st, prev, sender, room.TypeMember, sk(target), `{"membership":"invite"}`)
		default:
			ev, ok = g.add(st, prev, sender, room.TypeMember, sk(sender), fmt.Sprintf(`{"membership":"join","displayname":"n%d"}`, r.Intn(1000)))
		}
		if ok {
			prev = ev.EventID
			made++
		}
	}
	return st
}

// TestResolveOrderIndependent: on random forked rooms, Resolve gives the same state whatever the
// order of the input states, the order of each event's auth_events and prev_events, and whether
// auth chains come from the walk or from an AuthChainFunc.
func TestResolveOrderIndependent(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	for _, v := range []event.Version{event.V6, event.V10, event.V11, event.V12} {
		for seed := int64(0); seed < int64(seeds); seed++ {
			g := newGenRoom(v, seed)
			base, prev := g.base(12)
			var states []StateMap
			for f := 0; f < 2+int(seed%3); f++ {
				states = append(states, g.fork(base, prev, 3+g.rng.Intn(12)))
			}
			want, err := Resolve(context.Background(), v, states, nil, g.d.fetch)
			if err != nil {
				t.Fatalf("v%s seed %d: %v", v, seed, err)
			}
			for i := 0; i < 12; i++ {
				sd := g.d.shuffled(g.rng)
				perm := append([]StateMap(nil), states...)
				g.rng.Shuffle(len(perm), func(a, b int) { perm[a], perm[b] = perm[b], perm[a] })
				var chain AuthChainFunc
				if i%2 == 1 {
					chain = sd.walkAuthChain
				}
				got, err := Resolve(context.Background(), v, perm, chain, sd.fetch)
				if err != nil {
					t.Fatalf("v%s seed %d: %v", v, seed, err)
				}
				if describe(got) != describe(want) {
					t.Fatalf("v%s seed %d permutation %d: result depends on input order:\n got  %s\n want %s", v, seed, i, describe(got), describe(want))
				}
			}
			// Resolving a state with itself, or with one that adds nothing, changes nothing.
			same, err := Resolve(context.Background(), v, []StateMap{states[0], maps.Clone(states[0])}, nil, g.d.fetch)
			if err != nil || describe(same) != describe(states[0]) {
				t.Fatalf("v%s seed %d: resolving a state with itself changed it (%v)", v, seed, err)
			}
		}
	}
}

// BenchmarkResolve resolves two forks of a room with 10,000 members, each fork with a few hundred
// state events (topics, power levels, kicks, bans, joins, display names, join rules).
func BenchmarkResolve(b *testing.B) {
	for _, v := range []event.Version{event.V11, event.V12} {
		for _, forkSize := range []int{300} {
			g := newGenRoom(v, 42)
			base, prev := g.base(10000)
			s1 := g.fork(base, prev, forkSize)
			s2 := g.fork(base, prev, forkSize)
			states := []StateMap{s1, s2}
			_, conflicted := separate(states)
			b.Run(fmt.Sprintf("v%s/members=10000/fork=%d/conflicted_keys=%d", v, forkSize, len(conflicted)), func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					if _, err := Resolve(context.Background(), v, states, nil, g.d.fetch); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
