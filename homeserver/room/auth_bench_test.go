package room

import (
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// BenchmarkAllowed checks a message, a join and a power levels change against a room state, with
// a new Checker each time (as the package-level Allowed does) and with one reused Checker (as
// state resolution does).
func BenchmarkAllowed(b *testing.B) {
	r := newTestRoom(b, event.V11, "")
	state := StateFromMap(r.state)
	events := map[string]*event.PDU{
		"message": r.ev(charlie, "m.room.message", nil, `{"body":"hi"}`),
		"join":    r.member(gina, gina, `{"membership":"join","displayname":"gina"}`),
		"power_levels": r.ev(alice, TypePowerLevels, sk(""),
			`{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":10},"events":{"m.room.name":50}}`),
	}
	for name, ev := range events {
		b.Run(name+"/fresh", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := Allowed(event.V11, ev, state, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/cached", func(b *testing.B) {
			c := NewChecker(event.V11, nil)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := c.Allowed(ev, state); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
