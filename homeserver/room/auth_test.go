package room

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
)

const (
	alice   = "@alice:example.com"   // the creator; power 100 (infinite from v12)
	bob     = "@bob:example.com"     // moderator, power 50
	charlie = "@charlie:example.com" // joined, power 0
	dave    = "@dave:example.com"    // invited
	ella    = "@ella:example.com"    // banned
	frank   = "@frank:example.com"   // knocking
	gina    = "@gina:other.org"      // never in the room
	hal     = "@hal:example.com"     // left
)

// testRoom is a room state to check events against: alice created it (public), bob is a
// moderator, charlie a member, dave invited, ella banned, frank knocking, hal left.
type testRoom struct {
	v      event.Version
	roomID string
	create *event.PDU
	state  map[StateKeyTuple]*event.PDU
	n      int
}

func sk(s string) *string { return &s }

func newTestRoom(t testing.TB, v event.Version, createContent string) *testRoom {
	t.Helper()
	r := &testRoom{v: v, roomID: "!room:example.com", state: map[StateKeyTuple]*event.PDU{}}
	if createContent == "" {
		createContent = `{}`
	}
	var cc map[string]any
	if err := json.Unmarshal([]byte(createContent), &cc); err != nil {
		t.Fatal(err)
	}
	cc["room_version"] = v.ID()
	if v.CreatorInContent() {
		if _, ok := cc["creator"]; !ok {
			cc["creator"] = alice
		}
	}
	raw, _ := json.Marshal(cc)
	r.create = &event.PDU{EventID: "$create", RoomID: r.roomID, Sender: alice, Type: TypeCreate, StateKey: sk(""),
		Content: raw, PrevEvents: []string{}, AuthEvents: []string{}, Version: v}
	if v.RoomIDFromCreateEvent() {
		r.roomID = "!create"
		r.create.RoomID = ""
	}
	r.set(r.create)
	r.set(r.ev(alice, TypeMember, sk(alice), `{"membership":"join"}`))
	r.set(r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50}}`)))
	r.set(r.ev(alice, TypeJoinRules, sk(""), `{"join_rule":"public"}`))
	r.set(r.ev(bob, TypeMember, sk(bob), `{"membership":"join"}`))
	r.set(r.ev(charlie, TypeMember, sk(charlie), `{"membership":"join"}`))
	r.set(r.ev(alice, TypeMember, sk(dave), `{"membership":"invite"}`))
	r.set(r.ev(alice, TypeMember, sk(ella), `{"membership":"ban"}`))
	r.set(r.ev(frank, TypeMember, sk(frank), `{"membership":"knock"}`))
	r.set(r.ev(hal, TypeMember, sk(hal), `{"membership":"leave"}`))
	return r
}

// pl adapts power levels content to the version: room creators may not be listed from v12.
func (r *testRoom) pl(content string) string {
	if !r.v.PrivilegedCreators() {
		return content
	}
	var c map[string]any
	_ = json.Unmarshal([]byte(content), &c)
	if users, ok := c["users"].(map[string]any); ok {
		delete(users, alice)
	}
	b, _ := json.Marshal(c)
	return string(b)
}

func (r *testRoom) ev(sender, typ string, stateKey *string, content string) *event.PDU {
	r.n++
	return &event.PDU{
		EventID: fmt.Sprintf("$ev%d", r.n), RoomID: r.roomID, Sender: sender, Type: typ, StateKey: stateKey,
		Content: json.RawMessage(content), PrevEvents: []string{"$prev"}, AuthEvents: []string{},
		Depth: int64(r.n), OriginServerTS: int64(r.n), Version: r.v,
		Signatures: map[string]map[string]string{serverOf(sender): {"ed25519:k": "sig"}},
	}
}

// viaSigned adds a signature of the authorising server (example.com) to a restricted join.
func viaSigned(ev *event.PDU) *event.PDU {
	ev.Signatures["example.com"] = map[string]string{"ed25519:k": "sig"}
	return ev
}

func (r *testRoom) set(ev *event.PDU) { r.state[StateKeyTuple{ev.Type, *ev.StateKey}] = ev }

func (r *testRoom) member(sender, target, content string) *event.PDU {
	return r.ev(sender, TypeMember, sk(target), content)
}

func (r *testRoom) setPL(content string) { r.set(r.ev(alice, TypePowerLevels, sk(""), r.pl(content))) }

func (r *testRoom) setJoinRule(rule string) {
	r.set(r.ev(alice, TypeJoinRules, sk(""), `{"join_rule":"`+rule+`"}`))
}

// ruleFor picks the expected rule for v from a map keyed by version ID; a version without an
// entry takes the entry of the nearest lower version that has one. "" means allowed.
func ruleFor(v event.Version, want map[string]string) (string, bool) {
	best, found := -1, false
	var rule string
	for id, r := range want {
		var n int
		fmt.Sscan(id, &n)
		var vn int
		fmt.Sscan(v.ID(), &vn)
		if n <= vn && n > best {
			best, rule, found = n, r, true
		}
	}
	return rule, found
}

// tpiKey signs third-party invite tokens in the tests.
var tpiKey = ed25519.NewKeyFromSeed([]byte("0123456789abcdef0123456789abcdef"))

func tpiPublicKey() string {
	return base64.RawStdEncoding.EncodeToString(tpiKey.Public().(ed25519.PublicKey))
}

// signedTPI is third_party_invite content for mxid with token, signed by tpiKey (or with a
// garbage signature).
func signedTPI(mxid, token string, valid bool) string {
	body := `{"mxid":"` + mxid + `","token":"` + token + `"}` // canonical: keys sorted, no spaces
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(tpiKey, []byte(body)))
	if !valid {
		sig = base64.RawStdEncoding.EncodeToString(make([]byte, 64))
	}
	return `{"display_name":"d...","signed":{"mxid":"` + mxid + `","token":"` + token +
		`","signatures":{"id.example.org":{"ed25519:0":"` + sig + `"}}}}`
}

type authCase struct {
	name string
	// create is the m.room.create content ("" for the default).
	create string
	// setup changes the room and returns the event to check.
	setup func(r *testRoom) *event.PDU
	// want is the broken rule per version (see ruleFor); "" is allowed. Versions below the lowest
	// key are skipped.
	want map[string]string
	// verify replaces the join_authorised_via_users_server signature check.
	verify func(ev *event.PDU, server string) error
}

func allow(from string) map[string]string { return map[string]string{from: ""} }

var authCases = []authCase{
	// Rule 1: m.room.create.
	{name: "create allowed", setup: func(r *testRoom) *event.PDU { return r.create }, want: allow("6")},
	{name: "create with prev_events", setup: func(r *testRoom) *event.PDU {
		c := *r.create
		c.PrevEvents = []string{"$x"}
		return &c
	}, want: map[string]string{"6": "1.1"}},
	{name: "create room_id on another server", setup: func(r *testRoom) *event.PDU {
		c := *r.create
		c.RoomID = "!room:other.org"
		return &c
	}, want: map[string]string{"6": "1.2"}},
	{name: "create with a room_id (v12)", setup: func(r *testRoom) *event.PDU {
		c := *r.create
		c.RoomID = "!create"
		return &c
	}, want: map[string]string{"12": "1.2"}},
	{name: "create with unknown room_version", setup: func(r *testRoom) *event.PDU {
		c := *r.create
		c.Content = json.RawMessage(strings.Replace(string(c.Content), `"room_version":"`+r.v.ID()+`"`, `"room_version":"99"`, 1))
		return &c
	}, want: map[string]string{"6": "1.3"}},
	{name: "create with room_version 1 (recognised)", setup: func(r *testRoom) *event.PDU {
		c := *r.create
		c.Content = json.RawMessage(strings.Replace(string(c.Content), `"room_version":"`+r.v.ID()+`"`, `"room_version":"1"`, 1))
		return &c
	}, want: allow("6")},
	{name: "create without creator", setup: func(r *testRoom) *event.PDU {
		c := *r.create
		c.Content = json.RawMessage(`{"room_version":"` + r.v.ID() + `"}`)
		return &c
	}, want: map[string]string{"6": "1.4", "11": ""}},
	{name: "create with additional_creators", create: `{"additional_creators":["@bob:example.com","@zed:other.org"]}`,
		setup: func(r *testRoom) *event.PDU { return r.create }, want: allow("12")},
	{name: "create with additional_creators not an array", create: `{"additional_creators":"@bob:example.com"}`,
		setup: func(r *testRoom) *event.PDU { return r.create }, want: map[string]string{"12": "1.4"}},
	{name: "create with an invalid additional creator", create: `{"additional_creators":["bob"]}`,
		setup: func(r *testRoom) *event.PDU { return r.create }, want: map[string]string{"12": "1.4"}},

	// v12 rule 2: the room ID is the create event's.
	{name: "room_id not from the create event", setup: func(r *testRoom) *event.PDU {
		ev := r.ev(charlie, "m.room.message", nil, `{}`)
		ev.RoomID = "!other"
		return ev
	}, want: map[string]string{"12": "2"}},

	// Rule 3: m.federate.
	{name: "non-federated room, remote sender", create: `{"m.federate":false}`, setup: func(r *testRoom) *event.PDU {
		r.set(r.member(gina, gina, `{"membership":"join"}`))
		return r.ev(gina, "m.room.message", nil, `{}`)
	}, want: map[string]string{"6": "3", "12": "4"}},
	{name: "non-federated room, local sender", create: `{"m.federate":false}`, setup: func(r *testRoom) *event.PDU {
		return r.ev(charlie, "m.room.message", nil, `{}`)
	}, want: allow("6")},
	{name: "federated room, remote sender joins", setup: func(r *testRoom) *event.PDU {
		return r.member(gina, gina, `{"membership":"join"}`)
	}, want: allow("6")},

	// Rule 4.1.
	{name: "member without state_key", setup: func(r *testRoom) *event.PDU {
		return r.ev(charlie, TypeMember, nil, `{"membership":"join"}`)
	}, want: map[string]string{"6": "4.1", "12": "5.1"}},
	{name: "member without membership", setup: func(r *testRoom) *event.PDU {
		return r.member(charlie, charlie, `{"displayname":"c"}`)
	}, want: map[string]string{"6": "4.1", "12": "5.1"}},
	{name: "member with non-string membership", setup: func(r *testRoom) *event.PDU {
		return r.member(charlie, charlie, `{"membership":1}`)
	}, want: map[string]string{"6": "4.1", "12": "5.1"}},

	// Rule 4.2 (v8+): join_authorised_via_users_server is signed by that server.
	{name: "authorised join without the authorising server's signature", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("restricted")
		ev := r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":"@bob:example.com"}`)
		ev.Signatures = map[string]map[string]string{"other.org": {"ed25519:k": "s"}}
		return ev
	}, want: map[string]string{"8": "4.2.1", "12": "5.2.1"}},
	{name: "authorised join, signature check fails", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("restricted")
		return r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":"@bob:example.com"}`)
	}, verify: func(*event.PDU, string) error { return errors.New("bad signature") },
		want: map[string]string{"8": "4.2.1", "12": "5.2.1"}},
	{name: "authorised join, non-string authoriser", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("restricted")
		return r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":7}`)
	}, want: map[string]string{"8": "4.2.1", "12": "5.2.1"}},
	{name: "join_authorised_via_users_server means nothing before v8", setup: func(r *testRoom) *event.PDU {
		ev := r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":"@bob:example.com"}`)
		ev.Signatures = nil
		return ev
	}, want: map[string]string{"6": "", "8": "4.2.1", "12": "5.2.1"}},

	// Rule 4.3: join.
	{name: "creator's first join", setup: func(r *testRoom) *event.PDU {
		for k := range r.state {
			if k.Type != TypeCreate {
				delete(r.state, k)
			}
		}
		ev := r.member(alice, alice, `{"membership":"join"}`)
		ev.PrevEvents = []string{r.create.EventID}
		return ev
	}, want: allow("6")},
	{name: "someone else's first join", setup: func(r *testRoom) *event.PDU {
		for k := range r.state {
			if k.Type != TypeCreate {
				delete(r.state, k)
			}
		}
		ev := r.member(bob, bob, `{"membership":"join"}`)
		ev.PrevEvents = []string{r.create.EventID}
		return ev
	}, want: map[string]string{"6": "4.2.6", "8": "4.3.7", "12": "5.3.7"}},
	{name: "join for someone else", setup: func(r *testRoom) *event.PDU {
		return r.member(charlie, gina, `{"membership":"join"}`)
	}, want: map[string]string{"6": "4.2.2", "8": "4.3.2", "12": "5.3.2"}},
	{name: "banned user joins", setup: func(r *testRoom) *event.PDU {
		return r.member(ella, ella, `{"membership":"join"}`)
	}, want: map[string]string{"6": "4.2.3", "8": "4.3.3", "12": "5.3.3"}},
	{name: "invited user joins invite-only room", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("invite")
		return r.member(dave, dave, `{"membership":"join"}`)
	}, want: allow("6")},
	{name: "member re-joins invite-only room", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("invite")
		return r.member(charlie, charlie, `{"membership":"join","displayname":"c"}`)
	}, want: allow("6")},
	{name: "uninvited user joins invite-only room", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("invite")
		return r.member(gina, gina, `{"membership":"join"}`)
	}, want: map[string]string{"6": "4.2.6", "8": "4.3.7", "12": "5.3.7"}},
	{name: "join with no join rules event is as invite", setup: func(r *testRoom) *event.PDU {
		delete(r.state, StateKeyTuple{TypeJoinRules, ""})
		return r.member(dave, dave, `{"membership":"join"}`)
	}, want: allow("6")},
	{name: "invited user joins knock room", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("knock")
		return r.member(dave, dave, `{"membership":"join"}`)
	}, want: map[string]string{"6": "4.2.6", "7": ""}},
	{name: "uninvited user joins knock room", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("knock")
		return r.member(frank, frank, `{"membership":"join"}`)
	}, want: map[string]string{"6": "4.2.6", "8": "4.3.7", "12": "5.3.7"}},
	{name: "restricted join, invited", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("restricted")
		return r.member(dave, dave, `{"membership":"join"}`)
	}, want: map[string]string{"6": "4.2.6", "8": ""}},
	{name: "restricted join authorised by a moderator", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("restricted")
		return viaSigned(r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":"@bob:example.com"}`))
	}, want: map[string]string{"6": "4.2.6", "8": ""}},
	{name: "restricted join without authoriser", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("restricted")
		return r.member(gina, gina, `{"membership":"join"}`)
	}, want: map[string]string{"8": "4.3.5.2", "12": "5.3.5.2"}},
	{name: "restricted join authorised by a non-member", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("restricted")
		return viaSigned(r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":"@hal:example.com"}`))
	}, want: map[string]string{"8": "4.3.5.2", "12": "5.3.5.2"}},
	{name: "restricted join authorised by someone who may not invite", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("restricted")
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"invite":10}`)
		return viaSigned(r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":"@charlie:example.com"}`))
	}, want: map[string]string{"8": "4.3.5.2", "12": "5.3.5.2"}},
	{name: "knock_restricted join authorised", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("knock_restricted")
		return viaSigned(r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":"@bob:example.com"}`))
	}, want: map[string]string{"8": "4.3.7", "10": "", "12": ""}},
	{name: "public join", setup: func(r *testRoom) *event.PDU {
		return r.member(gina, gina, `{"membership":"join"}`)
	}, want: allow("6")},
	{name: "private join", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("private")
		return r.member(gina, gina, `{"membership":"join"}`)
	}, want: map[string]string{"6": "4.2.6", "8": "4.3.7", "12": "5.3.7"}},

	// Rule 4.4: invite.
	{name: "third-party invite", setup: func(r *testRoom) *event.PDU {
		r.set(r.ev(bob, TypeThirdPartyInvite, sk("tok"), `{"display_name":"d...","key_validity_url":"https://id.example.org/v","public_key":"`+tpiPublicKey()+`"}`))
		return r.member(bob, gina, `{"membership":"invite","third_party_invite":`+signedTPI(gina, "tok", true)+`}`)
	}, want: allow("6")},
	{name: "third-party invite with the key in public_keys", setup: func(r *testRoom) *event.PDU {
		r.set(r.ev(bob, TypeThirdPartyInvite, sk("tok"), `{"public_key":"AAAA","public_keys":[{"public_key":"`+strings.NewReplacer("+", "-", "/", "_").Replace(tpiPublicKey())+`"}]}`))
		return r.member(bob, gina, `{"membership":"invite","third_party_invite":`+signedTPI(gina, "tok", true)+`}`)
	}, want: allow("6")},
	{name: "third-party invite of a banned user", setup: func(r *testRoom) *event.PDU {
		r.set(r.ev(bob, TypeThirdPartyInvite, sk("tok"), `{"public_key":"`+tpiPublicKey()+`"}`))
		return r.member(bob, ella, `{"membership":"invite","third_party_invite":`+signedTPI(ella, "tok", true)+`}`)
	}, want: map[string]string{"6": "4.3.1.1", "8": "4.4.1.1", "12": "5.4.1.1"}},
	{name: "third-party invite without signed", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, gina, `{"membership":"invite","third_party_invite":{"display_name":"x"}}`)
	}, want: map[string]string{"6": "4.3.1.2", "8": "4.4.1.2", "12": "5.4.1.2"}},
	{name: "third-party invite without token", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, gina, `{"membership":"invite","third_party_invite":{"signed":{"mxid":"@gina:other.org"}}}`)
	}, want: map[string]string{"6": "4.3.1.3", "8": "4.4.1.3", "12": "5.4.1.3"}},
	{name: "third-party invite for another mxid", setup: func(r *testRoom) *event.PDU {
		r.set(r.ev(bob, TypeThirdPartyInvite, sk("tok"), `{"public_key":"`+tpiPublicKey()+`"}`))
		return r.member(bob, gina, `{"membership":"invite","third_party_invite":`+signedTPI(hal, "tok", true)+`}`)
	}, want: map[string]string{"6": "4.3.1.4", "8": "4.4.1.4", "12": "5.4.1.4"}},
	{name: "third-party invite with no matching invite event", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, gina, `{"membership":"invite","third_party_invite":`+signedTPI(gina, "tok", true)+`}`)
	}, want: map[string]string{"6": "4.3.1.5", "8": "4.4.1.5", "12": "5.4.1.5"}},
	{name: "third-party invite completed by someone else", setup: func(r *testRoom) *event.PDU {
		r.set(r.ev(bob, TypeThirdPartyInvite, sk("tok"), `{"public_key":"`+tpiPublicKey()+`"}`))
		return r.member(charlie, gina, `{"membership":"invite","third_party_invite":`+signedTPI(gina, "tok", true)+`}`)
	}, want: map[string]string{"6": "4.3.1.6", "8": "4.4.1.6", "12": "5.4.1.6"}},
	{name: "third-party invite with a bad signature", setup: func(r *testRoom) *event.PDU {
		r.set(r.ev(bob, TypeThirdPartyInvite, sk("tok"), `{"public_key":"`+tpiPublicKey()+`"}`))
		return r.member(bob, gina, `{"membership":"invite","third_party_invite":`+signedTPI(gina, "tok", false)+`}`)
	}, want: map[string]string{"6": "4.3.1.8", "8": "4.4.1.8", "12": "5.4.1.8"}},
	{name: "invite by a non-member", setup: func(r *testRoom) *event.PDU {
		return r.member(hal, gina, `{"membership":"invite"}`)
	}, want: map[string]string{"6": "4.3.2", "8": "4.4.2", "12": "5.4.2"}},
	{name: "invite of a member", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, charlie, `{"membership":"invite"}`)
	}, want: map[string]string{"6": "4.3.3", "8": "4.4.3", "12": "5.4.3"}},
	{name: "invite of a banned user", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, ella, `{"membership":"invite"}`)
	}, want: map[string]string{"6": "4.3.3", "8": "4.4.3", "12": "5.4.3"}},
	{name: "invite", setup: func(r *testRoom) *event.PDU {
		return r.member(charlie, gina, `{"membership":"invite"}`)
	}, want: allow("6")},
	{name: "invite below the invite level", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"invite":50}`)
		return r.member(charlie, gina, `{"membership":"invite"}`)
	}, want: map[string]string{"6": "4.3.5", "8": "4.4.5", "12": "5.4.5"}},

	// Rule 4.5: leave.
	{name: "member leaves", setup: func(r *testRoom) *event.PDU {
		return r.member(charlie, charlie, `{"membership":"leave"}`)
	}, want: allow("6")},
	{name: "invitee rejects", setup: func(r *testRoom) *event.PDU {
		return r.member(dave, dave, `{"membership":"leave"}`)
	}, want: allow("6")},
	{name: "knocker retracts", setup: func(r *testRoom) *event.PDU {
		return r.member(frank, frank, `{"membership":"leave"}`)
	}, want: map[string]string{"6": "4.4.1", "7": ""}},
	{name: "banned user leaves", setup: func(r *testRoom) *event.PDU {
		return r.member(ella, ella, `{"membership":"leave"}`)
	}, want: map[string]string{"6": "4.4.1", "8": "4.5.1", "12": "5.5.1"}},
	{name: "kick by a non-member", setup: func(r *testRoom) *event.PDU {
		return r.member(hal, charlie, `{"membership":"leave"}`)
	}, want: map[string]string{"6": "4.4.2", "8": "4.5.2", "12": "5.5.2"}},
	{name: "unban below the ban level", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"ban":60}`)
		return r.member(bob, ella, `{"membership":"leave"}`)
	}, want: map[string]string{"6": "4.4.3", "8": "4.5.3", "12": "5.5.3"}},
	{name: "unban", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, ella, `{"membership":"leave"}`)
	}, want: allow("6")},
	{name: "kick", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, charlie, `{"membership":"leave"}`)
	}, want: allow("6")},
	{name: "kick of an equal", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50}}`)
		return r.member(bob, charlie, `{"membership":"leave"}`)
	}, want: map[string]string{"6": "4.4.5", "8": "4.5.5", "12": "5.5.5"}},
	{name: "kick below the kick level", setup: func(r *testRoom) *event.PDU {
		return r.member(charlie, dave, `{"membership":"leave"}`)
	}, want: map[string]string{"6": "4.4.5", "8": "4.5.5", "12": "5.5.5"}},

	// Rule 4.6: ban.
	{name: "ban by a non-member", setup: func(r *testRoom) *event.PDU {
		return r.member(hal, charlie, `{"membership":"ban"}`)
	}, want: map[string]string{"6": "4.5.1", "8": "4.6.1", "12": "5.6.1"}},
	{name: "ban", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, gina, `{"membership":"ban"}`)
	}, want: allow("6")},
	{name: "ban of a higher user", setup: func(r *testRoom) *event.PDU {
		return r.member(bob, alice, `{"membership":"ban"}`)
	}, want: map[string]string{"6": "4.5.3", "8": "4.6.3", "12": "5.6.3"}},
	{name: "ban below the ban level", setup: func(r *testRoom) *event.PDU {
		return r.member(charlie, dave, `{"membership":"ban"}`)
	}, want: map[string]string{"6": "4.5.3", "8": "4.6.3", "12": "5.6.3"}},

	// Rule 4.7 (v7+): knock.
	{name: "knock on a public room", setup: func(r *testRoom) *event.PDU {
		return r.member(gina, gina, `{"membership":"knock"}`)
	}, want: map[string]string{"6": "4.6", "7": "4.6.1", "8": "4.7.1", "12": "5.7.1"}},
	{name: "knock", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("knock")
		return r.member(gina, gina, `{"membership":"knock"}`)
	}, want: map[string]string{"6": "4.6", "7": ""}},
	{name: "knock on knock_restricted", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("knock_restricted")
		return r.member(gina, gina, `{"membership":"knock"}`)
	}, want: map[string]string{"6": "4.6", "7": "4.6.1", "8": "4.7.1", "10": ""}},
	{name: "knock for someone else", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("knock")
		return r.member(charlie, gina, `{"membership":"knock"}`)
	}, want: map[string]string{"7": "4.6.2", "8": "4.7.2", "12": "5.7.2"}},
	{name: "knock by a member", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("knock")
		return r.member(charlie, charlie, `{"membership":"knock"}`)
	}, want: map[string]string{"7": "4.6.4", "8": "4.7.4", "12": "5.7.4"}},
	{name: "knock by a banned user", setup: func(r *testRoom) *event.PDU {
		r.setJoinRule("knock")
		return r.member(ella, ella, `{"membership":"knock"}`)
	}, want: map[string]string{"7": "4.6.4", "8": "4.7.4", "12": "5.7.4"}},

	// Rule 4.8: unknown membership.
	{name: "unknown membership", setup: func(r *testRoom) *event.PDU {
		return r.member(charlie, charlie, `{"membership":"wander"}`)
	}, want: map[string]string{"6": "4.6", "7": "4.7", "8": "4.8", "12": "5.8"}},

	// Rule 5: the sender is joined.
	{name: "message by a non-member", setup: func(r *testRoom) *event.PDU {
		return r.ev(gina, "m.room.message", nil, `{}`)
	}, want: map[string]string{"6": "5", "12": "6"}},
	{name: "message by an invitee", setup: func(r *testRoom) *event.PDU {
		return r.ev(dave, "m.room.message", nil, `{}`)
	}, want: map[string]string{"6": "5", "12": "6"}},
	{name: "message", setup: func(r *testRoom) *event.PDU {
		return r.ev(charlie, "m.room.message", nil, `{}`)
	}, want: allow("6")},

	// Rule 6: m.room.third_party_invite.
	{name: "third-party invite event", setup: func(r *testRoom) *event.PDU {
		return r.ev(charlie, TypeThirdPartyInvite, sk("tok"), `{}`)
	}, want: allow("6")},
	{name: "third-party invite event below the invite level", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"invite":20,"state_default":0}`)
		return r.ev(charlie, TypeThirdPartyInvite, sk("tok"), `{}`)
	}, want: map[string]string{"6": "6.1", "12": "7.1"}},

	// Rule 7: the event type's required level.
	{name: "state event below state_default", setup: func(r *testRoom) *event.PDU {
		return r.ev(charlie, "m.room.topic", sk(""), `{"topic":"t"}`)
	}, want: map[string]string{"6": "7", "12": "8"}},
	{name: "state event with an events entry", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"events":{"m.room.topic":0}}`)
		return r.ev(charlie, "m.room.topic", sk(""), `{"topic":"t"}`)
	}, want: allow("6")},
	{name: "message below events_default", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"events_default":10}`)
		return r.ev(charlie, "m.room.message", nil, `{}`)
	}, want: map[string]string{"6": "7", "12": "8"}},
	{name: "redaction is an ordinary event for the rules", setup: func(r *testRoom) *event.PDU {
		ev := r.ev(charlie, TypeRedaction, nil, `{"redacts":"$ev2"}`)
		ev.Redacts = "$ev2"
		return ev
	}, want: allow("6")},
	{name: "redaction below its events level", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"events":{"m.room.redaction":10}}`)
		return r.ev(charlie, TypeRedaction, nil, `{"redacts":"$ev2"}`)
	}, want: map[string]string{"6": "7", "12": "8"}},
	{name: "creator has no power levels needed before a power levels event", setup: func(r *testRoom) *event.PDU {
		delete(r.state, StateKeyTuple{TypePowerLevels, ""})
		return r.ev(alice, "m.room.name", sk(""), `{}`)
	}, want: allow("6")},
	{name: "others need state_default 50 before a power levels event", setup: func(r *testRoom) *event.PDU {
		delete(r.state, StateKeyTuple{TypePowerLevels, ""})
		return r.ev(bob, "m.room.name", sk(""), `{}`)
	}, want: map[string]string{"6": "7", "12": "8"}},

	// Rule 8: state keys that are user IDs.
	{name: "state_key of another user", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, "m.custom", sk(charlie), `{}`)
	}, want: map[string]string{"6": "8", "12": "9"}},
	{name: "state_key of the sender", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, "m.custom", sk(bob), `{}`)
	}, want: allow("6")},

	// Rule 9: m.room.power_levels.
	{name: "power levels with a bad user ID", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"bob":50}}`))
	}, want: map[string]string{"6": "9.1", "10": "9.3", "12": "10.3"}},
	{name: "power levels with string values", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":"100","@bob:example.com":" +50 "},"ban":"050"}`))
	}, want: map[string]string{"6": "", "10": "9.1", "12": "10.1"}},
	{name: "power levels with a string user level", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":"50"}}`))
	}, want: map[string]string{"6": "", "10": "9.3", "12": "10.3"}},
	{name: "power levels with a string events level", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100},"events":{"m.room.name":"50"}}`))
	}, want: map[string]string{"6": "", "10": "9.2", "12": "10.2"}},
	{name: "power levels with notifications not an object", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100},"notifications":7}`))
	}, want: map[string]string{"6": "9", "10": "9.2", "12": "10.2"}},
	{name: "power levels with a float", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100},"kick":50.5}`))
	}, want: map[string]string{"6": "9", "10": "9.1", "12": "10.1"}},
	{name: "power levels with a non-numeric string", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@bob:example.com":"lots"}}`))
	}, want: map[string]string{"6": "9.1", "10": "9.3", "12": "10.3"}},
	{name: "power levels listing the creator", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), `{"users":{"@alice:example.com":100}}`)
	}, want: map[string]string{"12": "10.4"}},
	{name: "power levels listing an additional creator", create: `{"additional_creators":["@bob:example.com"]}`, setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), `{"users":{"@bob:example.com":100}}`)
	}, want: map[string]string{"12": "10.4"}},
	{name: "first power levels", setup: func(r *testRoom) *event.PDU {
		delete(r.state, StateKeyTuple{TypePowerLevels, ""})
		return r.ev(alice, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@charlie:example.com":99}}`))
	}, want: allow("6")},
	{name: "moderator raises a level above their own", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"kick":60}`))
	}, want: map[string]string{"6": "9.3.2", "10": "9.5.2", "12": "10.6.2"}},
	{name: "moderator adds a level equal to their own", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"kick":50}`))
	}, want: allow("6")},
	{name: "moderator changes a level above their own", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"ban":80}`)
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"ban":40}`))
	}, want: map[string]string{"6": "9.3.1", "10": "9.5.1", "12": "10.6.1"}},
	{name: "moderator removes a level above their own", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"redact":80}`)
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50}}`))
	}, want: map[string]string{"6": "9.3.1", "10": "9.5.1", "12": "10.6.1"}},
	{name: "string and integer forms of one level are no change", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"ban":80}`)
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"ban":"80"}`))
	}, want: map[string]string{"6": "", "10": "9.1", "12": "10.1"}},
	{name: "moderator changes an event level above their own", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"events":{"m.room.name":70}}`)
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"events":{"m.room.name":10}}`))
	}, want: map[string]string{"6": "9.4.1", "10": "9.6.1", "12": "10.7.1"}},
	{name: "moderator sets an event level above their own", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"events":{"m.room.name":70}}`))
	}, want: map[string]string{"6": "9.5.1", "10": "9.7.1", "12": "10.8.1"}},
	{name: "moderator removes a notifications level above their own", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"notifications":{"room":70}}`)
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50}}`))
	}, want: map[string]string{"6": "9.4.1", "10": "9.6.1", "12": "10.7.1"}},
	{name: "moderator sets a notifications level above their own", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"notifications":{"room":51}}`))
	}, want: map[string]string{"6": "9.5.1", "10": "9.7.1", "12": "10.8.1"}},
	{name: "moderator sets notifications within their level", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"notifications":{"room":50},"events":{"m.room.name":50}}`))
	}, want: allow("6")},
	{name: "moderator demotes an equal", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50}}`)
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":0}}`))
	}, want: map[string]string{"6": "9.6.1", "10": "9.8.1", "12": "10.9.1"}},
	{name: "moderator demotes a lower user", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":10}}`)
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50}}`))
	}, want: allow("6")},
	{name: "moderator demotes themself", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":10}}`))
	}, want: allow("6")},
	{name: "moderator promotes above their level", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":51}}`))
	}, want: map[string]string{"6": "9.7.1", "10": "9.9.1", "12": "10.10.1"}},
	{name: "moderator promotes themself", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":60}}`))
	}, want: map[string]string{"6": "9.7.1", "10": "9.9.1", "12": "10.10.1"}},
	{name: "moderator promotes to their level", setup: func(r *testRoom) *event.PDU {
		return r.ev(bob, TypePowerLevels, sk(""), r.pl(`{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50}}`))
	}, want: allow("6")},
	{name: "admin removes alice's own entry", setup: func(r *testRoom) *event.PDU {
		return r.ev(alice, TypePowerLevels, sk(""), `{"users":{"@bob:example.com":50}}`)
	}, want: allow("6")},

	// v12: creators.
	{name: "additional creator bans the original creator", create: `{"additional_creators":["@bob:example.com"]}`, setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{}}`)
		return r.member(bob, alice, `{"membership":"ban"}`)
	}, want: map[string]string{"6": "4.5.3", "8": "4.6.3", "12": "5.6.3"}},
	{name: "creator bans a 2^53 moderator", setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":9007199254740991}}`)
		return r.member(alice, bob, `{"membership":"ban"}`)
	}, want: map[string]string{"6": "4.5.3", "8": "4.6.3", "12": ""}},
	{name: "additional creator sends state above every level", create: `{"additional_creators":["@charlie:example.com"]}`, setup: func(r *testRoom) *event.PDU {
		r.setPL(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"events":{"m.room.tombstone":9007199254740991}}`)
		return r.ev(charlie, "m.room.tombstone", sk(""), `{}`)
	}, want: map[string]string{"6": "7", "12": ""}},
}

func TestAllowed(t *testing.T) {
	for _, v := range event.Versions {
		for _, tc := range authCases {
			want, ok := ruleFor(v, tc.want)
			if !ok {
				continue
			}
			t.Run(v.ID()+"/"+tc.name, func(t *testing.T) {
				r := newTestRoom(t, v, tc.create)
				ev := tc.setup(r)
				err := Allowed(v, ev, StateFromMap(r.state), tc.verify)
				if want == "" {
					if err != nil {
						t.Fatalf("rejected: %v", err)
					}
					return
				}
				var ae *AuthError
				if !errors.As(err, &ae) {
					t.Fatalf("allowed (or not an AuthError: %v), want rejection under rule %s", err, want)
				}
				if ae.Rule != want {
					t.Fatalf("rejected under rule %s (%v), want rule %s", ae.Rule, err, want)
				}
			})
		}
	}
}

func TestAuthEventsNeeded(t *testing.T) {
	key := func(typ, sk string) StateKeyTuple { return StateKeyTuple{typ, sk} }
	cases := []struct {
		name string
		v    event.Version
		ev   *event.PDU
		want []StateKeyTuple
	}{
		{"create", event.V6, &event.PDU{Type: TypeCreate, StateKey: sk(""), Sender: alice}, nil},
		{"message", event.V6, &event.PDU{Type: "m.room.message", Sender: bob},
			[]StateKeyTuple{key(TypeCreate, ""), key(TypePowerLevels, ""), key(TypeMember, bob)}},
		{"message v12", event.V12, &event.PDU{Type: "m.room.message", Sender: bob},
			[]StateKeyTuple{key(TypePowerLevels, ""), key(TypeMember, bob)}},
		{"own join", event.V6, &event.PDU{Type: TypeMember, StateKey: sk(bob), Sender: bob, Content: json.RawMessage(`{"membership":"join"}`)},
			[]StateKeyTuple{key(TypeCreate, ""), key(TypePowerLevels, ""), key(TypeMember, bob), key(TypeJoinRules, "")}},
		{"kick", event.V6, &event.PDU{Type: TypeMember, StateKey: sk(charlie), Sender: bob, Content: json.RawMessage(`{"membership":"leave"}`)},
			[]StateKeyTuple{key(TypeCreate, ""), key(TypePowerLevels, ""), key(TypeMember, bob), key(TypeMember, charlie)}},
		{"knock", event.V7, &event.PDU{Type: TypeMember, StateKey: sk(gina), Sender: gina, Content: json.RawMessage(`{"membership":"knock"}`)},
			[]StateKeyTuple{key(TypeCreate, ""), key(TypePowerLevels, ""), key(TypeMember, gina), key(TypeJoinRules, "")}},
		{"third-party invite", event.V6, &event.PDU{Type: TypeMember, StateKey: sk(gina), Sender: bob,
			Content: json.RawMessage(`{"membership":"invite","third_party_invite":{"signed":{"mxid":"@gina:other.org","token":"tok"}}}`)},
			[]StateKeyTuple{key(TypeCreate, ""), key(TypePowerLevels, ""), key(TypeMember, bob), key(TypeMember, gina), key(TypeJoinRules, ""), key(TypeThirdPartyInvite, "tok")}},
		{"restricted join v8", event.V8, &event.PDU{Type: TypeMember, StateKey: sk(gina), Sender: gina,
			Content: json.RawMessage(`{"membership":"join","join_authorised_via_users_server":"@bob:example.com"}`)},
			[]StateKeyTuple{key(TypeCreate, ""), key(TypePowerLevels, ""), key(TypeMember, gina), key(TypeJoinRules, ""), key(TypeMember, bob)}},
		{"restricted join field before v8", event.V7, &event.PDU{Type: TypeMember, StateKey: sk(gina), Sender: gina,
			Content: json.RawMessage(`{"membership":"join","join_authorised_via_users_server":"@bob:example.com"}`)},
			[]StateKeyTuple{key(TypeCreate, ""), key(TypePowerLevels, ""), key(TypeMember, gina), key(TypeJoinRules, "")}},
	}
	for _, tc := range cases {
		got := AuthEventsNeeded(tc.v, tc.ev)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCheckAuthEvents(t *testing.T) {
	for _, v := range []event.Version{event.V6, event.V11, event.V12} {
		r := newTestRoom(t, v, "")
		st := func(typ, key string) *event.PDU { return r.state[StateKeyTuple{typ, key}] }
		msg := r.ev(charlie, "m.room.message", nil, `{}`)
		base := []*event.PDU{st(TypePowerLevels, ""), st(TypeMember, charlie)}
		if v.CreateEventInAuthEvents() {
			base = append(base, r.create)
		}
		ae := func(n string) string { // rule index in this version
			if v.RoomIDFromCreateEvent() {
				return "3." + n
			}
			return "2." + n
		}
		otherRoom := *st(TypeJoinRules, "")
		otherRoom.Type, otherRoom.RoomID = TypePowerLevels, "!elsewhere:example.com"
		cases := []struct {
			name string
			ev   *event.PDU
			auth []*event.PDU
			want string
		}{
			{"selected", msg, base, ""},
			{"create needs none", r.create, nil, ""},
			{"duplicate key", msg, append(base[:len(base):len(base)], st(TypeMember, charlie)), ae("1")},
			{"unexpected entry", msg, append(base[:len(base):len(base)], st(TypeJoinRules, "")), ae("2")},
			{"non-state entry", msg, append(base[:len(base):len(base)], r.ev(charlie, "m.room.message", nil, `{}`)), ae("2")},
			{"other room", msg, []*event.PDU{&otherRoom, st(TypeMember, charlie), r.create}[:2+boolInt(v.CreateEventInAuthEvents())], ae("5")},
		}
		if v.CreateEventInAuthEvents() {
			cases = append(cases, struct {
				name string
				ev   *event.PDU
				auth []*event.PDU
				want string
			}{"no create", msg, base[:2], "2.4"})
		} else {
			cases = append(cases, struct {
				name string
				ev   *event.PDU
				auth []*event.PDU
				want string
			}{"create cited", msg, append(base[:len(base):len(base)], r.create), "3.2"})
		}
		for _, tc := range cases {
			err := CheckAuthEvents(v, tc.ev, tc.auth)
			var got string
			var aerr *AuthError
			if errors.As(err, &aerr) {
				got = aerr.Rule
			} else if err != nil {
				t.Fatalf("%s/%s: not an AuthError: %v", v, tc.name, err)
			}
			if got != tc.want {
				t.Errorf("%s/%s: rule %q (%v), want %q", v, tc.name, got, err, tc.want)
			}
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestPowerLevels(t *testing.T) {
	create := &event.PDU{EventID: "$c", Type: TypeCreate, StateKey: sk(""), Sender: alice,
		Content: json.RawMessage(`{"creator":"@alice:example.com","additional_creators":["@bob:example.com"]}`)}
	pl := func(c string) *event.PDU {
		return &event.PDU{EventID: "$p", Type: TypePowerLevels, StateKey: sk(""), Sender: alice, Content: json.RawMessage(c)}
	}

	// No power levels event.
	p, err := NewPowerLevels(event.V6, create, nil)
	if err != nil || p.UserLevel(alice) != 100 || p.UserLevel(bob) != 0 || p.EventLevel("m.room.name", true) != 50 ||
		p.EventLevel("m.room.message", false) != 0 || p.Ban != 50 || p.Kick != 50 || p.Redact != 50 || p.Invite != 0 ||
		p.NotificationLevel("room") != 50 {
		t.Errorf("v6 defaults: %+v %v", p, err)
	}
	p, _ = NewPowerLevels(event.V11, &event.PDU{Type: TypeCreate, Sender: charlie, Content: json.RawMessage(`{}`)}, nil)
	if p.UserLevel(charlie) != 100 || p.UserLevel(alice) != 0 {
		t.Errorf("v11: the create sender is the creator: %+v", p)
	}
	p, _ = NewPowerLevels(event.V12, create, nil)
	if p.UserLevel(alice) != Infinite || p.UserLevel(bob) != Infinite || p.UserLevel(charlie) != 0 || !p.IsCreator(bob) {
		t.Errorf("v12 creators: %+v", p)
	}
	if got := RoomCreators(event.V12, create); fmt.Sprint(got) != fmt.Sprint([]string{alice, bob}) {
		t.Errorf("RoomCreators = %v", got)
	}

	// Values and their forms.
	content := `{"users":{"@bob:example.com":" +60 ","@charlie:example.com":"-5"},"users_default":"007","events":{"m.room.name":"20"},` +
		`"events_default":1,"state_default":2,"ban":3,"kick":4,"redact":5,"invite":6,"notifications":{"room":7}}`
	p, err = NewPowerLevels(event.V9, create, pl(content))
	if err != nil {
		t.Fatal(err)
	}
	if p.UserLevel(bob) != 60 || p.UserLevel(charlie) != -5 || p.UserLevel(gina) != 7 || p.EventLevel("m.room.name", true) != 20 ||
		p.EventLevel("m.room.topic", true) != 2 || p.EventLevel("m.room.message", false) != 1 || p.Ban != 3 || p.Kick != 4 ||
		p.Redact != 5 || p.Invite != 6 || p.NotificationLevel("room") != 7 {
		t.Errorf("v9 string levels: %+v", p)
	}
	if _, err := NewPowerLevels(event.V10, create, pl(content)); err == nil {
		t.Errorf("v10 accepted string levels")
	}
	for _, bad := range []string{`"1.5"`, `"abc"`, `"+"`, `"1 2"`, `"1e3"`, `true`, `null`, `1.5`, `"99999999999999999999"`} {
		if _, err := NewPowerLevels(event.V6, create, pl(`{"ban":`+bad+`}`)); err == nil {
			t.Errorf("v6 accepted ban %s", bad)
		}
	}
	for good, want := range map[string]int64{`"0100"`: 100, `" -7 "`: -7, `"+3"`: 3, `-0`: 0, `9007199254740991`: 9007199254740991} {
		p, err := NewPowerLevels(event.V6, create, pl(`{"ban":`+good+`}`))
		if err != nil || p.Ban != want {
			t.Errorf("v6 ban %s: %d, %v", good, p.Ban, err)
		}
	}
}

func TestRedaction(t *testing.T) {
	orig := &event.PDU{EventID: "$orig", RoomID: "!r:example.com", Sender: charlie, Type: "m.room.message"}
	pl, _ := NewPowerLevels(event.V6, &event.PDU{Type: TypeCreate, Content: json.RawMessage(`{"creator":"@alice:example.com"}`)},
		&event.PDU{Type: TypePowerLevels, Content: json.RawMessage(`{"users":{"@bob:example.com":50}}`)})
	red := func(v event.Version, sender string) *event.PDU {
		ev := &event.PDU{EventID: "$red", RoomID: "!r:example.com", Sender: sender, Type: TypeRedaction, Content: json.RawMessage(`{"redacts":"$orig"}`)}
		if !v.RedactsInContent() {
			ev.Content, ev.Redacts = json.RawMessage(`{}`), "$orig"
		}
		return ev
	}
	for _, v := range []event.Version{event.V6, event.V11} {
		if got := RedactedEventID(v, red(v, bob)); got != "$orig" {
			t.Errorf("%s: RedactedEventID = %q", v, got)
		}
		if !RedactionApplies(v, red(v, bob), orig, pl) {
			t.Errorf("%s: moderator's redaction does not apply", v)
		}
		if !RedactionApplies(v, red(v, "@zed:example.com"), orig, pl) {
			t.Errorf("%s: same-server redaction does not apply", v)
		}
		if RedactionApplies(v, red(v, gina), orig, pl) {
			t.Errorf("%s: a remote user's redaction applies", v)
		}
	}
	// Before v11 content.redacts is not what counts, nor is the top level from v11.
	ev := red(event.V11, bob)
	ev.Redacts = "$other"
	if RedactedEventID(event.V6, ev) != "$other" || RedactedEventID(event.V11, ev) != "$orig" {
		t.Errorf("redacts read from the wrong place")
	}
}

func TestJoinRuleAllow(t *testing.T) {
	jr := &event.PDU{Type: TypeJoinRules, StateKey: sk(""), Content: json.RawMessage(
		`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!space:example.com"},{"type":""},7]}`)}
	if JoinRule(jr) != JoinRuleRestricted {
		t.Errorf("JoinRule = %q", JoinRule(jr))
	}
	if got := JoinRuleAllow(jr); len(got) != 1 || got[0].RoomID != "!space:example.com" {
		t.Errorf("JoinRuleAllow = %+v", got)
	}
}

// TestReceiptChecks runs the first two auth checks on receipt of a PDU the way the receiving
// pipeline does: the auth events chosen by the selection algorithm pass CheckAuthEvents, and the
// event passes Allowed against them (plus, from v12, the create event found by the room ID).
func TestReceiptChecks(t *testing.T) {
	for _, v := range event.Versions {
		r := newTestRoom(t, v, "")
		ev := r.member(bob, charlie, `{"membership":"ban"}`)
		var auth []*event.PDU
		for _, k := range AuthEventsNeeded(v, ev) {
			if a := r.state[k]; a != nil {
				auth = append(auth, a)
				ev.AuthEvents = append(ev.AuthEvents, a.EventID)
			}
		}
		if err := CheckAuthEvents(v, ev, auth); err != nil {
			t.Fatalf("v%s: CheckAuthEvents: %v", v, err)
		}
		authState := auth
		if !v.CreateEventInAuthEvents() {
			authState = append(authState, r.create)
		}
		if err := Allowed(v, ev, StateFromEvents(authState), nil); err != nil {
			t.Fatalf("v%s: Allowed: %v", v, err)
		}
		// Without the create event there is nothing to authorise against.
		var noCreate []*event.PDU
		for _, a := range auth {
			if a.Type != TypeCreate {
				noCreate = append(noCreate, a)
			}
		}
		var ae *AuthError
		if err := Allowed(v, ev, StateFromEvents(noCreate), nil); !errors.As(err, &ae) {
			t.Fatalf("v%s: allowed without a create event", v)
		}
	}
}

func TestAuthErrorWrapsCause(t *testing.T) {
	r := newTestRoom(t, event.V10, "")
	r.setJoinRule("restricted")
	cause := errors.New("bad signature")
	ev := r.member(gina, gina, `{"membership":"join","join_authorised_via_users_server":"@bob:example.com"}`)
	err := Allowed(event.V10, ev, StateFromMap(r.state), func(_ *event.PDU, server string) error {
		if server != "example.com" {
			t.Errorf("asked to verify %s", server)
		}
		return cause
	})
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), "auth rule 4.2.1") {
		t.Fatalf("err = %v", err)
	}
}
