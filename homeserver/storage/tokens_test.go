package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func accessTokenExists(t *testing.T, s *storage.Store, hash string) bool {
	t.Helper()
	_, err := s.Read().AccessToken(context.Background(), hash)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func refreshTokenExists(t *testing.T, s *storage.Store, hash string) bool {
	t.Helper()
	_, err := s.Read().RefreshToken(context.Background(), hash)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestAccessTokenCarriesAccountFlags(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			for _, a := range []storage.Account{
				{Localpart: "admin", Admin: true, CreatedTS: 1},
				{Localpart: "guest", Guest: true, CreatedTS: 1},
			} {
				if err := c.CreateAccount(ctx, a); err != nil {
					return err
				}
			}
			if err := c.InsertAccessToken(ctx, storage.AccessToken{Hash: "h-admin", Localpart: "admin", DeviceID: "D1",
				RefreshHash: "r1", ExpiresTS: 5000, CreatedTS: 7}); err != nil {
				return err
			}
			return c.InsertAccessToken(ctx, storage.AccessToken{Hash: "h-guest", Localpart: "guest", DeviceID: "D2", CreatedTS: 8})
		})

		got, err := s.Read().AccessToken(ctx, "h-admin")
		if err != nil {
			t.Fatal(err)
		}
		want := storage.AccessToken{Hash: "h-admin", Localpart: "admin", DeviceID: "D1", RefreshHash: "r1", ExpiresTS: 5000,
			CreatedTS: 7, Admin: true}
		if got != want {
			t.Fatalf("AccessToken = %+v, want %+v", got, want)
		}
		got, err = s.Read().AccessToken(ctx, "h-guest")
		if err != nil || !got.Guest || got.Admin || got.Deactivated {
			t.Fatalf("guest token = %+v, %v", got, err)
		}

		mustWrite(t, s, func(c storage.Conn) error { return c.DeactivateAccount(ctx, "admin") })
		if got, err = s.Read().AccessToken(ctx, "h-admin"); err != nil || !got.Deactivated {
			t.Fatalf("token of a deactivated account = %+v, %v; want Deactivated", got, err)
		}

		if _, err := s.Read().AccessToken(ctx, "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown token: err = %v, want ErrNotFound", err)
		}
		err = s.Write(ctx, func(c storage.Conn) error {
			return c.InsertAccessToken(ctx, storage.AccessToken{Hash: "h-guest", Localpart: "guest", DeviceID: "D3", CreatedTS: 9})
		})
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate token hash: err = %v, want ErrConflict", err)
		}

		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteAccessToken(ctx, "h-guest") })
		if accessTokenExists(t, s, "h-guest") {
			t.Fatal("DeleteAccessToken left the token")
		}
	})
}

// refreshChain stores the tokens of a login (a1 with r1) followed by a refresh (a2 with r2, which
// replaced r1), as the account service does.
func refreshChain(t *testing.T, s *storage.Store) {
	t.Helper()
	ctx := context.Background()
	mustWrite(t, s, func(c storage.Conn) error {
		if err := c.CreateAccount(ctx, storage.Account{Localpart: "alice", CreatedTS: 1}); err != nil {
			return err
		}
		for _, rt := range []storage.RefreshToken{
			{Hash: "r1", Localpart: "alice", DeviceID: "D", CreatedTS: 1},
			{Hash: "r2", Localpart: "alice", DeviceID: "D", PrevHash: "r1", CreatedTS: 2},
		} {
			if err := c.InsertRefreshToken(ctx, rt); err != nil {
				return err
			}
		}
		for _, at := range []storage.AccessToken{
			{Hash: "a1", Localpart: "alice", DeviceID: "D", RefreshHash: "r1", ExpiresTS: 100, CreatedTS: 1},
			{Hash: "a2", Localpart: "alice", DeviceID: "D", RefreshHash: "r2", ExpiresTS: 200, CreatedTS: 2},
			{Hash: "plain", Localpart: "alice", DeviceID: "OTHER", CreatedTS: 1},
		} {
			if err := c.InsertAccessToken(ctx, at); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestRevokeReplacedRefreshToken(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		refreshChain(t, s)
		rt, err := s.Read().RefreshToken(ctx, "r2")
		if err != nil {
			t.Fatal(err)
		}
		if want := (storage.RefreshToken{Hash: "r2", Localpart: "alice", DeviceID: "D", PrevHash: "r1", CreatedTS: 2}); rt != want {
			t.Fatalf("RefreshToken = %+v, want %+v", rt, want)
		}

		mustWrite(t, s, func(c storage.Conn) error { return c.RevokeReplacedRefreshToken(ctx, "r2") })
		if refreshTokenExists(t, s, "r1") {
			t.Error("the replaced refresh token r1 still exists")
		}
		if accessTokenExists(t, s, "a1") {
			t.Error("the access token issued with r1 still exists")
		}
		if !refreshTokenExists(t, s, "r2") || !accessTokenExists(t, s, "a2") || !accessTokenExists(t, s, "plain") {
			t.Fatal("RevokeReplacedRefreshToken removed tokens it should keep")
		}
		if rt, _ := s.Read().RefreshToken(ctx, "r2"); rt.PrevHash != "" {
			t.Errorf("r2.PrevHash = %q after revocation, want empty", rt.PrevHash)
		}
		// Revoking again, or for a token that replaced nothing or does not exist, is a no-op.
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.RevokeReplacedRefreshToken(ctx, "r2"); err != nil {
				return err
			}
			return c.RevokeReplacedRefreshToken(ctx, "missing")
		})
		if !refreshTokenExists(t, s, "r2") || !accessTokenExists(t, s, "a2") {
			t.Fatal("repeated revocation removed the current pair")
		}
	})
}

func TestMarkAccessTokenUsed(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		refreshChain(t, s)
		a2, err := s.Read().AccessToken(ctx, "a2")
		if err != nil {
			t.Fatal(err)
		}
		if a2.Used {
			t.Fatal("new access token is already marked used")
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.MarkAccessTokenUsed(ctx, a2) })
		if a2, err = s.Read().AccessToken(ctx, "a2"); err != nil || !a2.Used {
			t.Fatalf("after MarkAccessTokenUsed: %+v, %v; want Used", a2, err)
		}
		// First use of the new pair revokes the refresh token it replaced and its access token.
		if refreshTokenExists(t, s, "r1") || accessTokenExists(t, s, "a1") {
			t.Fatal("first use of a2 did not revoke r1 and a1")
		}
		if !refreshTokenExists(t, s, "r2") {
			t.Fatal("first use of a2 revoked its own refresh token")
		}

		// A token without a refresh token is marked used and touches nothing else.
		plain, err := s.Read().AccessToken(ctx, "plain")
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.MarkAccessTokenUsed(ctx, plain) })
		if plain, _ = s.Read().AccessToken(ctx, "plain"); !plain.Used {
			t.Fatal("plain token not marked used")
		}
		if !accessTokenExists(t, s, "a2") || !refreshTokenExists(t, s, "r2") {
			t.Fatal("marking a plain token used removed other tokens")
		}
	})
}

func TestDeleteRefreshToken(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		refreshChain(t, s)
		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteRefreshToken(ctx, "r2") })
		if refreshTokenExists(t, s, "r2") || accessTokenExists(t, s, "a2") {
			t.Fatal("DeleteRefreshToken left r2 or its access token")
		}
		if !refreshTokenExists(t, s, "r1") || !accessTokenExists(t, s, "a1") || !accessTokenExists(t, s, "plain") {
			t.Fatal("DeleteRefreshToken removed unrelated tokens")
		}
	})
}

func TestDeleteDeviceTokensExcept(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		refreshChain(t, s)
		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteDeviceTokensExcept(ctx, "alice", "D", "a2", "r2") })
		if accessTokenExists(t, s, "a1") || refreshTokenExists(t, s, "r1") {
			t.Fatal("tokens not kept were not deleted")
		}
		if !accessTokenExists(t, s, "a2") || !refreshTokenExists(t, s, "r2") || !accessTokenExists(t, s, "plain") {
			t.Fatal("kept tokens or another device's token were deleted")
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteDeviceTokensExcept(ctx, "alice", "D", "", "") })
		if accessTokenExists(t, s, "a2") || refreshTokenExists(t, s, "r2") {
			t.Fatal("keeping nothing left tokens of the device")
		}
		if !accessTokenExists(t, s, "plain") {
			t.Fatal("another device's token was deleted")
		}
	})
}

func i64(v int64) *int64 { return &v }

func TestRegistrationTokens(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "limited", UsesAllowed: i64(2), ExpiryTS: i64(5000), CreatedTS: 1}); err != nil {
				return err
			}
			return c.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "open", CreatedTS: 2})
		})
		err := s.Write(ctx, func(c storage.Conn) error {
			return c.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "open", CreatedTS: 3})
		})
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate token: err = %v, want ErrConflict", err)
		}

		got, err := s.Read().RegistrationToken(ctx, "limited")
		if err != nil {
			t.Fatal(err)
		}
		if got.UsesAllowed == nil || *got.UsesAllowed != 2 || got.ExpiryTS == nil || *got.ExpiryTS != 5000 || got.CreatedTS != 1 ||
			got.Pending != 0 || got.Completed != 0 {
			t.Fatalf("limited token = %+v", got)
		}
		open, err := s.Read().RegistrationToken(ctx, "open")
		if err != nil || open.UsesAllowed != nil || open.ExpiryTS != nil {
			t.Fatalf("open token = %+v, %v; want nil uses and expiry", open, err)
		}
		if _, err := s.Read().RegistrationToken(ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing token: err = %v, want ErrNotFound", err)
		}

		all, err := s.Read().RegistrationTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tok := range all {
			names = append(names, tok.Token)
		}
		if !slices.Equal(names, []string{"limited", "open"}) {
			t.Fatalf("RegistrationTokens = %v, want [limited open]", names)
		}

		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.AddRegistrationTokenUse(ctx, "limited", 1, 0); err != nil {
				return err
			}
			if err := c.AddRegistrationTokenUse(ctx, "limited", -1, 1); err != nil {
				return err
			}
			return c.AddRegistrationTokenUse(ctx, "limited", 1, 0)
		})
		got, _ = s.Read().RegistrationToken(ctx, "limited")
		if got.Pending != 1 || got.Completed != 1 {
			t.Fatalf("after uses: pending %d completed %d, want 1 and 1", got.Pending, got.Completed)
		}
		if got.Valid(1000) {
			t.Fatal("token with pending+completed = uses_allowed is valid")
		}

		mustWrite(t, s, func(c storage.Conn) error { return c.UpdateRegistrationToken(ctx, "limited", i64(3), nil) })
		got, _ = s.Read().RegistrationToken(ctx, "limited")
		if got.UsesAllowed == nil || *got.UsesAllowed != 3 || got.ExpiryTS != nil {
			t.Fatalf("after update: %+v", got)
		}
		if !got.Valid(1 << 50) {
			t.Fatal("token with a use left and no expiry is not valid")
		}

		for name, fn := range map[string]func(c storage.Conn) error{
			"UpdateRegistrationToken": func(c storage.Conn) error { return c.UpdateRegistrationToken(ctx, "missing", nil, nil) },
			"DeleteRegistrationToken": func(c storage.Conn) error { return c.DeleteRegistrationToken(ctx, "missing") },
			"AddRegistrationTokenUse": func(c storage.Conn) error { return c.AddRegistrationTokenUse(ctx, "missing", 1, 0) },
		} {
			if err := s.Write(ctx, fn); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("%s of a missing token: err = %v, want ErrNotFound", name, err)
			}
		}

		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteRegistrationToken(ctx, "limited") })
		if _, err := s.Read().RegistrationToken(ctx, "limited"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted token: err = %v, want ErrNotFound", err)
		}
	})
}

func TestRegistrationTokenValid(t *testing.T) {
	const now = 1000
	for _, tc := range []struct {
		name string
		tok  storage.RegistrationToken
		want bool
	}{
		{"unlimited", storage.RegistrationToken{}, true},
		{"unlimited with many uses", storage.RegistrationToken{Pending: 50, Completed: 50}, true},
		{"uses left", storage.RegistrationToken{UsesAllowed: i64(2), Completed: 1}, true},
		{"used up by completed", storage.RegistrationToken{UsesAllowed: i64(2), Completed: 2}, false},
		{"used up by pending", storage.RegistrationToken{UsesAllowed: i64(2), Pending: 2}, false},
		{"used up by both", storage.RegistrationToken{UsesAllowed: i64(2), Pending: 1, Completed: 1}, false},
		{"zero uses allowed", storage.RegistrationToken{UsesAllowed: i64(0)}, false},
		{"expires later", storage.RegistrationToken{ExpiryTS: i64(now + 1)}, true},
		{"expires now", storage.RegistrationToken{ExpiryTS: i64(now)}, false},
		{"expired", storage.RegistrationToken{ExpiryTS: i64(now - 1)}, false},
		{"expired with uses left", storage.RegistrationToken{UsesAllowed: i64(5), ExpiryTS: i64(now - 1)}, false},
	} {
		if got := tc.tok.Valid(now); got != tc.want {
			t.Errorf("%s: Valid = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestUIASessionRoundTrip(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.CreateUIASession(ctx, storage.UIASession{ID: "s1", Action: "delete_devices", Localpart: "alice",
				CreatedTS: 10, ExpiresTS: 100}); err != nil {
				return err
			}
			return c.CreateUIASession(ctx, storage.UIASession{ID: "s2", Action: "register", CreatedTS: 10, ExpiresTS: 1000})
		})
		got, err := s.Read().UIASession(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != "s1" || got.Action != "delete_devices" || got.Localpart != "alice" || len(got.Completed) != 0 ||
			got.RegistrationToken != "" || got.CreatedTS != 10 || got.ExpiresTS != 100 {
			t.Fatalf("new session = %+v", got)
		}

		got.Completed = []string{"m.login.dummy", "m.login.password"}
		got.RegistrationToken = "tok"
		mustWrite(t, s, func(c storage.Conn) error { return c.UpdateUIASession(ctx, got) })
		again, err := s.Read().UIASession(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(again.Completed, got.Completed) || again.RegistrationToken != "tok" || again.Action != "delete_devices" {
			t.Fatalf("after update = %+v", again)
		}

		err = s.Write(ctx, func(c storage.Conn) error {
			return c.UpdateUIASession(ctx, storage.UIASession{ID: "missing", Completed: []string{"x"}})
		})
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("updating a missing session: err = %v, want ErrNotFound", err)
		}

		expired, err := s.Read().ExpiredUIASessions(ctx, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(expired) != 1 || expired[0].ID != "s1" || expired[0].RegistrationToken != "tok" {
			t.Fatalf("ExpiredUIASessions(500) = %+v, want only s1 with its token", expired)
		}

		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteUIASession(ctx, "s1") })
		if _, err := s.Read().UIASession(ctx, "s1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted session: err = %v, want ErrNotFound", err)
		}
		if _, err := s.Read().UIASession(ctx, "s2"); err != nil {
			t.Fatalf("other session: %v", err)
		}
	})
}
