package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func putAccountData(t *testing.T, s *storage.Store, localpart, roomID, typ, content string) int64 {
	t.Helper()
	var pos int64
	err := s.Write(context.Background(), func(c storage.Conn) error {
		var err error
		pos, err = c.PutAccountData(context.Background(), localpart, roomID, typ, json.RawMessage(content))
		return err
	})
	if err != nil {
		t.Fatalf("PutAccountData(%s, %q, %s): %v", localpart, roomID, typ, err)
	}
	return pos
}

func TestAccountDataPositions(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		writes := []struct{ user, room, typ, content string }{
			{"alice", "", "m.direct", `{"a":1}`},
			{"alice", "!r:hs", "m.tag", `{"tags":{}}`},
			{"bob", "", "m.direct", `{"b":1}`},
			{"alice", "", "m.direct", `{"a":2}`}, // overwrite: moves to a new position
			{"alice", "!r:hs", "m.direct", `{"room":true}`},
		}
		var positions []int64
		for _, w := range writes {
			pos := putAccountData(t, s, w.user, w.room, w.typ, w.content)
			if len(positions) > 0 && pos <= positions[len(positions)-1] {
				t.Fatalf("position %d after %d: positions must strictly increase", pos, positions[len(positions)-1])
			}
			positions = append(positions, pos)
		}

		// Global and per-room entries of one type are separate; the overwrite won.
		for _, c := range []struct{ room, typ, want string }{
			{"", "m.direct", `{"a":2}`},
			{"!r:hs", "m.direct", `{"room":true}`},
			{"!r:hs", "m.tag", `{"tags":{}}`},
		} {
			got, err := s.Read().GetAccountData(ctx, "alice", c.room, c.typ)
			if err != nil || string(got) != c.want {
				t.Fatalf("GetAccountData(alice, %q, %s) = %s, %v; want %s", c.room, c.typ, got, err, c.want)
			}
		}
		for _, c := range []struct{ user, room, typ string }{{"alice", "", "m.tag"}, {"alice", "!other:hs", "m.direct"}, {"carol", "", "m.direct"}} {
			if _, err := s.Read().GetAccountData(ctx, c.user, c.room, c.typ); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("GetAccountData(%v) = %v, want ErrNotFound", c, err)
			}
		}

		// All of alice's entries, in position order; the overwritten one appears once, at its new position.
		all, err := s.Read().AccountDataSince(ctx, "alice", 0)
		if err != nil {
			t.Fatal(err)
		}
		wantAll := []storage.AccountData{
			{RoomID: "!r:hs", Type: "m.tag", Content: json.RawMessage(`{"tags":{}}`), StreamPos: positions[1]},
			{RoomID: "", Type: "m.direct", Content: json.RawMessage(`{"a":2}`), StreamPos: positions[3]},
			{RoomID: "!r:hs", Type: "m.direct", Content: json.RawMessage(`{"room":true}`), StreamPos: positions[4]},
		}
		if fmt.Sprint(all) != fmt.Sprint(wantAll) {
			t.Fatalf("AccountDataSince(alice, 0):\n got %v\nwant %v", all, wantAll)
		}
		// Only entries after the given position.
		later, err := s.Read().AccountDataSince(ctx, "alice", positions[3])
		if err != nil || fmt.Sprint(later) != fmt.Sprint(wantAll[2:]) {
			t.Fatalf("AccountDataSince(alice, %d) = %v, %v; want %v", positions[3], later, err, wantAll[2:])
		}
		none, err := s.Read().AccountDataSince(ctx, "alice", positions[4])
		if err != nil || len(none) != 0 {
			t.Fatalf("AccountDataSince(alice, latest) = %v, %v; want nothing", none, err)
		}
		bob, err := s.Read().AccountDataSince(ctx, "bob", 0)
		if err != nil || len(bob) != 1 || bob[0].StreamPos != positions[2] {
			t.Fatalf("AccountDataSince(bob, 0) = %v, %v", bob, err)
		}
		if latest, err := s.Read().Position(ctx, storage.StreamAccountData); err != nil || latest != positions[4] {
			t.Fatalf("Position = %d, %v; want %d", latest, err, positions[4])
		}

		// Erasing a user removes only their data.
		if err := s.Write(ctx, func(c storage.Conn) error { return c.DeleteAccountDataOf(ctx, "alice") }); err != nil {
			t.Fatal(err)
		}
		if left, err := s.Read().AccountDataSince(ctx, "alice", 0); err != nil || len(left) != 0 {
			t.Fatalf("after DeleteAccountDataOf: %v, %v", left, err)
		}
		if left, err := s.Read().AccountDataSince(ctx, "bob", 0); err != nil || len(left) != 1 {
			t.Fatalf("bob's data after deleting alice's: %v, %v", left, err)
		}
	})
}

// TestAccountDataConcurrentWriters: concurrent writers get distinct positions, and every position
// handed out is readable afterwards.
func TestAccountDataConcurrentWriters(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		const writers, each = 8, 10
		var mu sync.Mutex
		var got []int64
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					var pos int64
					err := s.Write(context.Background(), func(c storage.Conn) error {
						var err error
						pos, err = c.PutAccountData(context.Background(), fmt.Sprintf("user%d", w), "", fmt.Sprintf("t.%d", i), json.RawMessage(`{}`))
						return err
					})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					got = append(got, pos)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		slices.Sort(got)
		if len(slices.Compact(slices.Clone(got))) != writers*each {
			t.Fatalf("positions are not distinct: %v", got)
		}
		var total int
		for w := range writers {
			rows, err := s.Read().AccountDataSince(context.Background(), fmt.Sprintf("user%d", w), 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(rows); i++ {
				if rows[i].StreamPos <= rows[i-1].StreamPos {
					t.Fatalf("AccountDataSince not in position order: %v", rows)
				}
			}
			total += len(rows)
		}
		if total != writers*each {
			t.Fatalf("%d entries readable, want %d", total, writers*each)
		}
	})
}

func TestFilterIDs(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		insert := func(user, f string) int64 {
			t.Helper()
			var id int64
			if err := s.Write(ctx, func(c storage.Conn) error {
				var err error
				id, err = c.InsertFilter(ctx, user, json.RawMessage(f))
				return err
			}); err != nil {
				t.Fatalf("InsertFilter: %v", err)
			}
			return id
		}
		a1 := insert("alice", `{"n":1}`)
		a2 := insert("alice", `{"n":2}`)
		b1 := insert("bob", `{"n":3}`)
		a3 := insert("alice", `{"n":1}`)
		if !(a1 < a2 && a2 < a3) {
			t.Fatalf("alice's filter ids %d, %d, %d do not increase", a1, a2, a3)
		}
		if b1 != 1 {
			t.Fatalf("bob's first filter id is %d, want 1: ids count per user", b1)
		}
		for _, c := range []struct {
			user string
			id   int64
			want string
		}{{"alice", a1, `{"n":1}`}, {"alice", a2, `{"n":2}`}, {"alice", a3, `{"n":1}`}, {"bob", b1, `{"n":3}`}} {
			got, err := s.Read().Filter(ctx, c.user, c.id)
			if err != nil || string(got) != c.want {
				t.Fatalf("Filter(%s, %d) = %s, %v; want %s", c.user, c.id, got, err, c.want)
			}
		}
		if _, err := s.Read().Filter(ctx, "bob", a3); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Filter(bob, alice's id %d) = %v, want ErrNotFound", a3, err)
		}
	})
}

func TestProfileFields(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		write := func(fn func(c storage.Conn) error) {
			t.Helper()
			if err := s.Write(ctx, fn); err != nil {
				t.Fatal(err)
			}
		}
		write(func(c storage.Conn) error {
			for _, f := range []struct{ user, key, value string }{
				{"alice", "displayname", `"Alice"`},
				{"alice", "avatar_url", `"mxc://hs/abc"`},
				{"alice", "com.example.x", `{"deep":[1,null]}`},
				{"alice", "displayname", `"Alice 2"`}, // upsert
				{"bob", "displayname", `"Bob"`},
			} {
				if err := c.SetProfileField(ctx, f.user, f.key, json.RawMessage(f.value)); err != nil {
					return err
				}
			}
			return nil
		})
		p, err := s.Read().Profile(ctx, "alice")
		want := map[string]string{"displayname": `"Alice 2"`, "avatar_url": `"mxc://hs/abc"`, "com.example.x": `{"deep":[1,null]}`}
		if err != nil || len(p) != len(want) {
			t.Fatalf("Profile(alice) = %s, %v", p, err)
		}
		for k, v := range want {
			if string(p[k]) != v {
				t.Fatalf("Profile(alice)[%s] = %s, want %s", k, p[k], v)
			}
		}
		if v, err := s.Read().ProfileField(ctx, "bob", "displayname"); err != nil || string(v) != `"Bob"` {
			t.Fatalf("ProfileField(bob, displayname) = %s, %v", v, err)
		}
		write(func(c storage.Conn) error { return c.DeleteProfileField(ctx, "alice", "avatar_url") })
		if _, err := s.Read().ProfileField(ctx, "alice", "avatar_url"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("ProfileField after delete = %v, want ErrNotFound", err)
		}
		write(func(c storage.Conn) error { return c.DeleteProfile(ctx, "alice") })
		if p, err := s.Read().Profile(ctx, "alice"); err != nil || len(p) != 0 {
			t.Fatalf("Profile after DeleteProfile = %v, %v", p, err)
		}
		if p, err := s.Read().Profile(ctx, "bob"); err != nil || len(p) != 1 {
			t.Fatalf("bob's profile after deleting alice's = %v, %v", p, err)
		}
	})
}
