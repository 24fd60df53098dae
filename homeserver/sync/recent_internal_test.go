package sync

import (
	"fmt"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// TestRecentEvents: batches that follow each other are kept and answer any range inside them
// (newest first, by room, up to the limit); a range reaching outside, a batch after a gap and a
// transaction of the serial path make them answer nothing until batches follow again; past the
// bound the older half goes.
func TestRecentEvents(t *testing.T) {
	batch := func(after int64, rooms ...string) room.Batch {
		b := room.Batch{After: after, Last: after + int64(len(rooms))}
		for i, r := range rooms {
			b.Events = append(b.Events, storage.Event{EventID: fmt.Sprintf("$%d", after+int64(i)+1), RoomID: r, StreamPos: after + int64(i) + 1})
		}
		return b
	}
	ids := func(evs []storage.Event) string {
		var out []string
		for _, e := range evs {
			out = append(out, e.EventID)
		}
		return fmt.Sprint(out)
	}
	var r recentEvents
	if _, ok := r.between([]string{"!a"}, 0, 1, 10); ok {
		t.Fatal("empty: answered")
	}
	r.batch(batch(10, "!a", "!b", "!a"))
	r.batch(batch(13, "!b", "!a"))
	for _, c := range []struct {
		rooms    []string
		from, to int64
		limit    int
		want     string
		ok       bool
	}{
		{[]string{"!a"}, 10, 15, 10, "[$15 $13 $11]", true},
		{[]string{"!a", "!b"}, 11, 14, 10, "[$14 $13 $12]", true},
		{[]string{"!a", "!b"}, 10, 15, 2, "[$15 $14]", true},
		{[]string{"!c"}, 10, 15, 10, "[]", true},
		{[]string{"!a"}, 9, 15, 10, "", false},  // position 10 is not theirs
		{[]string{"!a"}, 10, 16, 10, "", false}, // nor 16
	} {
		got, ok := r.between(c.rooms, c.from, c.to, c.limit)
		if ok != c.ok || ok && ids(got) != c.want {
			t.Errorf("between(%v, %d, %d, %d) = %s, %v; want %s, %v", c.rooms, c.from, c.to, c.limit, ids(got), ok, c.want, c.ok)
		}
	}
	r.batch(batch(16, "!a")) // position 16 went to someone else: start over from 16
	if _, ok := r.between([]string{"!a"}, 14, 17, 10); ok {
		t.Error("answered across a gap")
	}
	if got, ok := r.between([]string{"!a"}, 16, 17, 10); !ok || ids(got) != "[$17]" {
		t.Errorf("after the gap: %s, %v", ids(got), ok)
	}
	r.batch(room.Batch{}) // the serial path
	if _, ok := r.between([]string{"!a"}, 16, 17, 10); ok {
		t.Error("answered after a serial transaction")
	}
	r.batch(batch(17, "!a"))
	if got, ok := r.between([]string{"!a"}, 17, 18, 10); !ok || ids(got) != "[$18]" {
		t.Errorf("after the serial transaction: %s, %v", ids(got), ok)
	}

	// The bound.
	var rooms []string
	for range maxRecentEvents + 1 {
		rooms = append(rooms, "!a")
	}
	r.batch(batch(18, rooms...))
	last := int64(18 + maxRecentEvents + 1)
	if len(r.evs) > maxRecentEvents || r.hi != last || r.lo != r.evs[0].StreamPos-1 {
		t.Fatalf("after the bound: %d events, (%d, %d], first at %d", len(r.evs), r.lo, r.hi, r.evs[0].StreamPos)
	}
	if _, ok := r.between([]string{"!a"}, r.lo-1, last, 10); ok {
		t.Error("answered for a dropped position")
	}
	got, ok := r.between([]string{"!a"}, r.lo, last, 3)
	if !ok || !slices.Equal([]int64{got[0].StreamPos, got[1].StreamPos, got[2].StreamPos}, []int64{last, last - 1, last - 2}) {
		t.Errorf("newest three: %v, %v", got, ok)
	}
}
