package sync

import "testing"

func TestToken(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Token
		ok   bool
	}{
		{"s12_3", Token{Events: 12, AccountData: 3}, true}, // an older token: receipts, typing, presence from the start
		{"s12", Token{Events: 12}, true},                   // the room package's stream token
		{"s12_3_7_9", Token{12, 3, 7, 9, 0, 0, 0}, true},
		{"s12_3_7_9_1730000000000", Token{12, 3, 7, 9, 1730000000000, 0, 0}, true},
		{"s12_3_7_9_5_6_7", Token{12, 3, 7, 9, 5, 6, 7}, true},
		{"s12_3_7_9_5_6_7_8", Token{12, 3, 7, 9, 5, 6, 7}, true}, // parts of streams added later are ignored
		{"s0_0", Token{}, true},
		{"", Token{}, false},
		{"s", Token{}, false},
		{"s1__2", Token{}, false},
		{"s01_2", Token{}, false},
		{"s-1_2", Token{}, false},
		{"t1_2", Token{}, false},
		{"s1_x", Token{}, false},
		{"s1_", Token{}, false},
		{"s+1_2", Token{}, false},
		{"s1_2_", Token{}, false},
		{"s99999999999999999999_1", Token{}, false},
	} {
		got, err := ParseToken(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseToken(%q) = %v, %v", c.in, got, err)
		}
		if c.ok {
			if back, err := ParseToken(got.String()); err != nil || back != got {
				t.Errorf("round trip of %q: %v %v", got.String(), back, err)
			}
		}
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"m.room.*", "m.room.message", true},
		{"m.room.*", "m.roomx", false},
		{"*", "", true},
		{"m.*.message", "m.room.message", true},
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.messages", false},
		{"*.message", "m.room.member", false},
	} {
		if got := glob(c.p, c.s); got != c.want {
			t.Errorf("glob(%q, %q) = %v", c.p, c.s, got)
		}
	}
}
