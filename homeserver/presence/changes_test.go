package presence

import (
	"slices"
	"testing"
)

// TestChangedSince: the change log answers like a scan of every user, including across its trims
// and for tokens older than what it holds.
func TestChangedSince(t *testing.T) {
	s := &Service{users: map[string]*state{}, waiting: map[string]struct{}{}, dirty: map[string]struct{}{}}
	scan := func(since int64) []string {
		var ids []string
		for id, st := range s.users {
			if st.pos > since && st.everKnown {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		return ids
	}
	now := int64(1_000)
	var e effects
	for i := range 3 * maxChanges / 2 {
		id := string(rune('a' + i%50))
		st := s.users[id]
		if st == nil {
			st = &state{presence: Offline}
			s.users[id] = st
		}
		next := Online
		if st.presence == Online {
			next = Unavailable
		}
		s.set(&e, id, st, next, "", now, false)
		now++
	}
	if s.changesFrom == 0 {
		t.Fatal("the log was never trimmed; the test does not cover trims")
	}
	for _, since := range []int64{0, s.changesFrom - 1, s.changesFrom, s.changesFrom + 1, now - 60, now - 10, now - 1, now} {
		got := s.changedSince(since)
		slices.Sort(got)
		if want := scan(since); !slices.Equal(got, want) {
			t.Fatalf("changedSince(%d) = %v, want %v", since, got, want)
		}
	}
}
