package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func TestServerKeys(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		if keys, err := s.Read().ServerKeys(ctx, "a.org"); err != nil || len(keys) != 0 {
			t.Fatalf("ServerKeys of an unknown server = %v, %v", keys, err)
		}
		k1 := storage.ServerKey{ServerName: "a.org", KeyID: "ed25519:1", PublicKey: "pub1", ValidUntilTS: 2000,
			FetchedTS: 1000, FromServer: "a.org", KeyJSON: []byte(`{"v":1}`)}
		k2 := storage.ServerKey{ServerName: "a.org", KeyID: "ed25519:2", PublicKey: "pub2", ValidUntilTS: 2000,
			FetchedTS: 1000, FromServer: "a.org", KeyJSON: []byte(`{"v":1}`)}
		other := storage.ServerKey{ServerName: "b.org", KeyID: "ed25519:1", PublicKey: "pubB", ValidUntilTS: 9000,
			FetchedTS: 1000, FromServer: "notary.org", KeyJSON: []byte(`{"b":1}`)}
		mustWrite(t, s, func(c storage.Conn) error { return c.StoreServerKeys(ctx, []storage.ServerKey{k1, k2, other}) })
		keys, err := s.Read().ServerKeys(ctx, "a.org")
		if err != nil || len(keys) != 2 || keys[0].KeyID != "ed25519:1" || keys[1].KeyID != "ed25519:2" {
			t.Fatalf("ServerKeys = %+v, %v", keys, err)
		}
		if got := keys[0]; got.PublicKey != "pub1" || got.ValidUntilTS != 2000 || got.ExpiredTS != 0 || got.FetchedTS != 1000 ||
			got.FromServer != "a.org" || string(got.KeyJSON) != `{"v":1}` {
			t.Fatalf("stored key = %+v", got)
		}

		// A newer response (key 1 now old, valid longer) replaces the row.
		newer := k1
		newer.ValidUntilTS, newer.ExpiredTS, newer.FetchedTS, newer.KeyJSON = 5000, 1500, 3000, []byte(`{"v":2}`)
		mustWrite(t, s, func(c storage.Conn) error { return c.StoreServerKeys(ctx, []storage.ServerKey{newer}) })
		// An older one (a notary's stale copy) does not.
		stale := k1
		stale.ValidUntilTS, stale.FromServer, stale.KeyJSON = 1800, "notary.org", []byte(`{"v":0}`)
		mustWrite(t, s, func(c storage.Conn) error { return c.StoreServerKeys(ctx, []storage.ServerKey{stale}) })
		keys, err = s.Read().ServerKeys(ctx, "a.org")
		if err != nil || len(keys) != 2 {
			t.Fatal(keys, err)
		}
		if got := keys[0]; got.ValidUntilTS != 5000 || got.ExpiredTS != 1500 || got.FetchedTS != 3000 || got.FromServer != "a.org" ||
			string(got.KeyJSON) != `{"v":2}` {
			t.Fatalf("after a newer and a stale response: %+v", got)
		}
		if keys, _ := s.Read().ServerKeys(ctx, "b.org"); len(keys) != 1 || keys[0].PublicKey != "pubB" {
			t.Fatalf("b.org keys = %+v", keys)
		}
		// Failing inside a transaction stores nothing.
		boom := errors.New("boom")
		err = s.Write(ctx, func(c storage.Conn) error {
			if err := c.StoreServerKeys(ctx, []storage.ServerKey{{ServerName: "c.org", KeyID: "ed25519:x", PublicKey: "p",
				KeyJSON: []byte("{}")}}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if keys, _ := s.Read().ServerKeys(ctx, "c.org"); len(keys) != 0 {
			t.Fatalf("rolled back keys stored: %+v", keys)
		}
	})
}
