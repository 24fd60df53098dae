package clientapi

import "testing"

// TestDeviceListsPos: the device_lists position is the seventh part of a sync token; tokens of
// fewer parts read as 0; anything but a sync token is M_INVALID_PARAM.
func TestDeviceListsPos(t *testing.T) {
	for _, tc := range []struct {
		token  string
		events int64
		dl     int64
		bad    bool
	}{
		{token: "s1_2_3_4_5_6_7", events: 1, dl: 7},
		{token: "s10_2_3_4_5_6_70_8", events: 10, dl: 70},
		{token: "s5_0_0_0_0", events: 5},
		{token: "s5", events: 5},
		{token: "t5", bad: true},
		{token: "s", bad: true},
		{token: "s1__3", bad: true},
		{token: "s1_-2", bad: true},
		{token: "s1_x_3_4_5_6_7", bad: true},
	} {
		dl, err := deviceListsPos(tc.token)
		ev, err2 := eventsPos(tc.token)
		if tc.bad {
			if err == nil || err2 == nil {
				t.Errorf("%q: accepted", tc.token)
			}
			continue
		}
		if err != nil || err2 != nil || dl != tc.dl || ev != tc.events {
			t.Errorf("%q: events %d device lists %d (%v, %v), want %d %d", tc.token, ev, dl, err, err2, tc.events, tc.dl)
		}
	}
}
