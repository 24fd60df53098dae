package account_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

const (
	testServer     = "example.org"
	refreshLife    = 5 * time.Minute
	uiaLife        = 15 * time.Minute
	alicePassword  = "correct horse battery staple"
	startMS        = 1_700_000_000_000
	accessPrefix   = "mat_"
	refreshPrefix  = "mrt_"
	deviceIDLength = 10
)

// testClock is a settable clock for Service.Now.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time          { return c.t }
func (c *testClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newService(t *testing.T, s *storage.Store, b *bus.Bus) (*account.Service, *testClock) {
	t.Helper()
	svc := account.New(s, b, account.Options{ServerName: testServer, RefreshLifetime: refreshLife, PasswordMinLength: 8,
		UIALifetime: uiaLife, OpenIDLifetime: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	clock := &testClock{t: time.UnixMilli(startMS)}
	svc.Now = clock.now
	return svc, clock
}

// wantErr fails unless err is the Matrix error want (by errcode).
func wantErr(t *testing.T, what string, err error, want *spec.Error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %s", what, err, want.Code)
	}
}

// wantUnknownToken fails unless err is M_UNKNOWN_TOKEN with the given soft_logout.
func wantUnknownToken(t *testing.T, what string, err error, soft bool) {
	t.Helper()
	var e *spec.Error
	if !errors.As(err, &e) || e.Code != spec.ErrUnknownToken.Code {
		t.Fatalf("%s: err = %v, want M_UNKNOWN_TOKEN", what, err)
	}
	if got, ok := e.Extra["soft_logout"].(bool); !ok || got != soft {
		t.Fatalf("%s: soft_logout = %v, want %v", what, e.Extra["soft_logout"], soft)
	}
	if e.HTTPStatus() != 401 {
		t.Fatalf("%s: status %d, want 401", what, e.HTTPStatus())
	}
}

func mustAuth(t *testing.T, svc *account.Service, token string) account.Caller {
	t.Helper()
	c, err := svc.Authenticate(context.Background(), token)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return c
}

func registerAlice(t *testing.T, svc *account.Service, p account.RegisterParams) account.Tokens {
	t.Helper()
	p.Localpart, p.Password = "alice", alicePassword
	toks, err := svc.Register(context.Background(), p)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return toks
}

func TestRegisterLoginAuthenticate(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, _ := newService(t, s, nil)
		name := "phone"
		reg := registerAlice(t, svc, account.RegisterParams{DeviceName: &name, IP: "192.0.2.1"})
		if reg.UserID != "@alice:example.org" {
			t.Fatalf("UserID = %q", reg.UserID)
		}
		if len(reg.DeviceID) != deviceIDLength || !strings.HasPrefix(reg.AccessToken, accessPrefix) ||
			reg.RefreshToken != "" || reg.ExpiresInMS != 0 {
			t.Fatalf("registration tokens = %+v", reg)
		}
		c := mustAuth(t, svc, reg.AccessToken)
		if c.UserID != reg.UserID || c.Localpart != "alice" || c.DeviceID != reg.DeviceID || c.Admin || c.Guest {
			t.Fatalf("caller = %+v", c)
		}
		d, err := svc.Device(ctx, "alice", reg.DeviceID)
		if err != nil || d.DisplayName == nil || *d.DisplayName != "phone" || d.LastSeenIP != "192.0.2.1" || d.CreatedTS != startMS {
			t.Fatalf("device = %+v, %v", d, err)
		}
		// The account stores a hash, not the password.
		a, err := s.Read().Account(ctx, "alice")
		if err != nil || a.PasswordHash == "" || strings.Contains(a.PasswordHash, alicePassword) {
			t.Fatalf("stored account = %+v, %v", a, err)
		}
		// The database holds token hashes only.
		if _, err := s.Read().AccessToken(ctx, reg.AccessToken); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("access token stored in clear: %v", err)
		}
		if _, err := s.Read().AccessToken(ctx, account.HashToken(reg.AccessToken)); err != nil {
			t.Fatalf("access token hash not stored: %v", err)
		}

		// Logins by localpart, full user ID and in another case each get a new device.
		devices := map[string]bool{reg.DeviceID: true}
		for _, user := range []string{"alice", "@alice:example.org", "ALICE", "@Alice:example.org"} {
			toks, err := svc.Login(ctx, account.LoginParams{User: user, Password: alicePassword})
			if err != nil {
				t.Fatalf("Login(%q): %v", user, err)
			}
			if toks.UserID != "@alice:example.org" || devices[toks.DeviceID] {
				t.Fatalf("Login(%q) = %+v (devices so far %v)", user, toks, devices)
			}
			devices[toks.DeviceID] = true
			if c := mustAuth(t, svc, toks.AccessToken); c.DeviceID != toks.DeviceID || c.Localpart != "alice" {
				t.Fatalf("Login(%q): caller %+v", user, c)
			}
		}
		// Earlier tokens stay valid.
		mustAuth(t, svc, reg.AccessToken)
		if devs, err := svc.Devices(ctx, "alice"); err != nil || len(devs) != len(devices) {
			t.Fatalf("Devices = %d, %v; want %d", len(devs), err, len(devices))
		}

		// Unknown users and wrong passwords get the same answer.
		_, errUnknown := svc.Login(ctx, account.LoginParams{User: "bob", Password: alicePassword})
		wantErr(t, "unknown user", errUnknown, spec.ErrForbidden)
		_, errWrong := svc.Login(ctx, account.LoginParams{User: "alice", Password: "wrong password"})
		wantErr(t, "wrong password", errWrong, spec.ErrForbidden)
		if errUnknown.Error() != errWrong.Error() {
			t.Errorf("unknown user (%v) and wrong password (%v) are distinguishable", errUnknown, errWrong)
		}
		_, err = svc.Login(ctx, account.LoginParams{User: "@alice:other.org", Password: alicePassword})
		wantErr(t, "user of another server", err, spec.ErrForbidden)
		_, err = svc.Login(ctx, account.LoginParams{User: "@alice", Password: alicePassword})
		wantErr(t, "malformed user ID", err, spec.ErrForbidden)

		_, err = svc.Authenticate(ctx, "mat_garbage")
		wantUnknownToken(t, "unknown token", err, false)
	})
}

func TestRegisterRejects(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, _ := newService(t, s, nil)
		if _, err := svc.Register(ctx, account.RegisterParams{Localpart: "alice", InhibitLogin: true}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			local string
			want  *spec.Error
		}{
			{"alice", spec.ErrUserInUse},
			{"Alice", spec.ErrInvalidUsername},
			{"al ice", spec.ErrInvalidUsername},
			{strings.Repeat("a", 256), spec.ErrInvalidUsername},
			{"_bridge_bot", spec.ErrExclusive},
		} {
			_, err := svc.Register(ctx, account.RegisterParams{Localpart: tc.local, InhibitLogin: true})
			wantErr(t, "Register("+tc.local+")", err, tc.want)
			if tc.want != spec.ErrUserInUse {
				if err := svc.CheckUsername(ctx, tc.local); !errors.Is(err, tc.want) {
					t.Errorf("CheckUsername(%q) = %v, want %s", tc.local, err, tc.want.Code)
				}
			}
		}
		wantErr(t, "CheckUsername(alice)", svc.CheckUsername(ctx, "alice"), spec.ErrUserInUse)
		if err := svc.CheckUsername(ctx, "bob"); err != nil {
			t.Fatalf("CheckUsername(bob) = %v", err)
		}
		wantErr(t, "short password", svc.CheckPasswordStrength("1234567"), spec.ErrWeakPassword)
		wantErr(t, "huge password", svc.CheckPasswordStrength(strings.Repeat("x", 513)), spec.ErrWeakPassword)
		if err := svc.CheckPasswordStrength("12345678"); err != nil {
			t.Fatalf("8-character password: %v", err)
		}

		// An account registered without a password cannot log in with any password, even "".
		_, err := svc.Login(ctx, account.LoginParams{User: "alice", Password: ""})
		wantErr(t, "login without password", err, spec.ErrForbidden)

		// InhibitLogin creates no device; a generated localpart is valid.
		if devs, _ := svc.Devices(ctx, "alice"); len(devs) != 0 {
			t.Fatalf("InhibitLogin created devices: %+v", devs)
		}
		toks, err := svc.Register(ctx, account.RegisterParams{})
		if err != nil || !spec.ValidLocalpart(toks.UserID.Localpart()) || toks.AccessToken == "" {
			t.Fatalf("Register without a localpart = %+v, %v", toks, err)
		}
	})
}

func TestDeactivate(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, _ := newService(t, s, nil)
		reg := registerAlice(t, svc, account.RegisterParams{Refresh: true})
		if err := svc.Deactivate(ctx, "alice", false); err != nil {
			t.Fatal(err)
		}
		_, err := svc.Login(ctx, account.LoginParams{User: "alice", Password: alicePassword})
		wantErr(t, "login of a deactivated account", err, spec.ErrUserDeactivated)

		_, err = svc.Authenticate(ctx, reg.AccessToken)
		wantUnknownToken(t, "token of a deactivated account", err, false)
		_, err = svc.Refresh(ctx, reg.RefreshToken)
		wantUnknownToken(t, "refresh token of a deactivated account", err, false)
		if devs, _ := svc.Devices(ctx, "alice"); len(devs) != 0 {
			t.Fatalf("deactivated account kept devices: %+v", devs)
		}
		// The user ID is never handed out again.
		_, err = svc.Register(ctx, account.RegisterParams{Localpart: "alice", InhibitLogin: true})
		wantErr(t, "re-registering a deactivated user ID", err, spec.ErrUserInUse)
	})
}

func TestDeactivatedFlagRefusesToken(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, _ := newService(t, s, nil)
		reg := registerAlice(t, svc, account.RegisterParams{})
		// Even if a token survived (another node deactivating concurrently), the account flag wins.
		if err := s.Write(ctx, func(c storage.Conn) error { return c.DeactivateAccount(ctx, "alice") }); err != nil {
			t.Fatal(err)
		}
		_, err := svc.Authenticate(ctx, reg.AccessToken)
		wantUnknownToken(t, "surviving token of a deactivated account", err, false)
	})
}

func TestExpiredRefreshableToken(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, clock := newService(t, s, nil)
		reg := registerAlice(t, svc, account.RegisterParams{Refresh: true})
		if reg.ExpiresInMS != refreshLife.Milliseconds() || !strings.HasPrefix(reg.RefreshToken, refreshPrefix) {
			t.Fatalf("refreshable registration = %+v", reg)
		}
		clock.advance(refreshLife - time.Millisecond)
		mustAuth(t, svc, reg.AccessToken)
		clock.advance(time.Millisecond)
		_, err := svc.Authenticate(ctx, reg.AccessToken)
		wantUnknownToken(t, "expired access token", err, true)

		// The refresh token still works and gives a fresh token of the same device.
		toks, err := svc.Refresh(ctx, reg.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if toks.DeviceID != reg.DeviceID || toks.UserID != reg.UserID || toks.ExpiresInMS != refreshLife.Milliseconds() {
			t.Fatalf("refreshed tokens = %+v", toks)
		}
		if c := mustAuth(t, svc, toks.AccessToken); c.DeviceID != reg.DeviceID {
			t.Fatalf("refreshed token's device = %q", c.DeviceID)
		}

		// Tokens without a refresh token never expire.
		plain, err := svc.Login(ctx, account.LoginParams{User: "alice", Password: alicePassword})
		if err != nil {
			t.Fatal(err)
		}
		clock.advance(1000 * time.Hour)
		mustAuth(t, svc, plain.AccessToken)
	})
}

func TestRefreshSemantics(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, _ := newService(t, s, nil)
		first := registerAlice(t, svc, account.RegisterParams{Refresh: true})
		mustAuth(t, svc, first.AccessToken)

		second, err := svc.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if second.AccessToken == first.AccessToken || second.RefreshToken == first.RefreshToken || second.RefreshToken == "" {
			t.Fatalf("refresh did not issue a new pair: %+v", second)
		}
		// The response was lost: the old refresh token still works, as the new pair is unused.
		retry, err := svc.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatalf("old refresh token refused before the new pair was used: %v", err)
		}

		// The client uses the new access token: the old refresh token and access token are revoked.
		mustAuth(t, svc, retry.AccessToken)
		_, err = svc.Refresh(ctx, first.RefreshToken)
		wantUnknownToken(t, "old refresh token after the new access token was used", err, false)
		_, err = svc.Authenticate(ctx, first.AccessToken)
		wantUnknownToken(t, "old access token after the new access token was used", err, false)
		mustAuth(t, svc, retry.AccessToken) // still fine on later uses

		// Using the new refresh token also revokes the one it replaced.
		third, err := svc.Refresh(ctx, retry.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		fourth, err := svc.Refresh(ctx, third.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		_, err = svc.Refresh(ctx, retry.RefreshToken)
		wantUnknownToken(t, "refresh token replaced by a used refresh token", err, false)
		_, err = svc.Authenticate(ctx, retry.AccessToken)
		wantUnknownToken(t, "access token of a replaced refresh token", err, false)
		if c := mustAuth(t, svc, fourth.AccessToken); c.DeviceID != first.DeviceID {
			t.Fatalf("device changed across refreshes: %q", c.DeviceID)
		}

		_, err = svc.Refresh(ctx, "mrt_unknown")
		wantUnknownToken(t, "unknown refresh token", err, false)
	})
}

func TestLoginWithExistingDeviceID(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, clock := newService(t, s, nil)
		name := "phone"
		old := registerAlice(t, svc, account.RegisterParams{DeviceID: "PHONE", DeviceName: &name, Refresh: true})
		other, err := svc.Login(ctx, account.LoginParams{User: "alice", Password: alicePassword})
		if err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Minute)
		again, err := svc.Login(ctx, account.LoginParams{User: "alice", Password: alicePassword, DeviceID: "PHONE"})
		if err != nil {
			t.Fatal(err)
		}
		if again.DeviceID != "PHONE" {
			t.Fatalf("device ID = %q, want PHONE", again.DeviceID)
		}
		_, err = svc.Authenticate(ctx, old.AccessToken)
		wantUnknownToken(t, "previous access token of the device", err, false)
		_, err = svc.Refresh(ctx, old.RefreshToken)
		wantUnknownToken(t, "previous refresh token of the device", err, false)
		if c := mustAuth(t, svc, again.AccessToken); c.DeviceID != "PHONE" {
			t.Fatalf("caller device = %q", c.DeviceID)
		}
		mustAuth(t, svc, other.AccessToken) // other devices are untouched

		d, err := svc.Device(ctx, "alice", "PHONE")
		if err != nil || d.DisplayName == nil || *d.DisplayName != "phone" || d.CreatedTS != startMS {
			t.Fatalf("reused device = %+v, %v; want name and creation time kept", d, err)
		}
		if devs, _ := svc.Devices(ctx, "alice"); len(devs) != 2 {
			t.Fatalf("devices = %d, want 2", len(devs))
		}
	})
}

func TestLogout(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, _ := newService(t, s, nil)
		a := registerAlice(t, svc, account.RegisterParams{})
		var toks []account.Tokens
		for i := 0; i < 2; i++ {
			tk, err := svc.Login(ctx, account.LoginParams{User: "alice", Password: alicePassword})
			if err != nil {
				t.Fatal(err)
			}
			toks = append(toks, tk)
		}
		if err := svc.Logout(ctx, mustAuth(t, svc, a.AccessToken)); err != nil {
			t.Fatal(err)
		}
		_, err := svc.Authenticate(ctx, a.AccessToken)
		wantUnknownToken(t, "logged-out token", err, false)
		if _, err := svc.Device(ctx, "alice", a.DeviceID); !errors.Is(err, spec.ErrNotFound) {
			t.Fatalf("logged-out device: %v", err)
		}
		mustAuth(t, svc, toks[0].AccessToken)

		if err := svc.LogoutAll(ctx, mustAuth(t, svc, toks[0].AccessToken)); err != nil {
			t.Fatal(err)
		}
		for _, tk := range toks {
			_, err := svc.Authenticate(ctx, tk.AccessToken)
			wantUnknownToken(t, "token after logout/all", err, false)
		}
	})
}

func TestDeviceChangesAreAnnounced(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Start(ctx, bus.Options{StoreDir: t.TempDir(), Name: "account-test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := make(chan []byte, 16)
	sub, err := b.Subscribe(bus.SubjectDeviceChange, func(data []byte) { got <- data })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := b.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	next := func() map[string]any {
		t.Helper()
		select {
		case data := <-got:
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no device change announced")
			return nil
		}
	}

	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		svc, _ := newService(t, s, b)
		reg := registerAlice(t, svc, account.RegisterParams{})
		if m := next(); m["user_id"] != "@alice:example.org" || m["device_id"] != reg.DeviceID || m["deleted"] != false {
			t.Fatalf("announcement of registration = %v", m)
		}
		if err := svc.Logout(ctx, mustAuth(t, svc, reg.AccessToken)); err != nil {
			t.Fatal(err)
		}
		if m := next(); m["device_id"] != reg.DeviceID || m["deleted"] != true {
			t.Fatalf("announcement of logout = %v", m)
		}
	})
}

func TestLocalpartOf(t *testing.T) {
	t.Parallel()
	svc := account.New(nil, nil, account.Options{ServerName: testServer}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if lp, err := svc.LocalpartOf("@alice:example.org"); err != nil || lp != "alice" {
		t.Fatalf("LocalpartOf = %q, %v", lp, err)
	}
	_, err := svc.LocalpartOf("@alice:other.org")
	wantErr(t, "remote user", err, spec.ErrForbidden)
	_, err = svc.LocalpartOf("alice")
	wantErr(t, "not a user ID", err, spec.ErrInvalidParam)
	if got := svc.UserID("bob"); got != "@bob:example.org" {
		t.Fatalf("UserID = %q", got)
	}
	if svc.ServerName() != testServer {
		t.Fatalf("ServerName = %q", svc.ServerName())
	}
}

// TestTokenCacheRevokedAcrossNodes: two nodes share the database and the bus; a token used on
// node B (so cached there) stops working on B once node A logs its device out.
func TestTokenCacheRevokedAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Start(ctx, bus.Options{StoreDir: t.TempDir(), Name: "account-cache-test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		nodeA, _ := newService(t, s, b)
		nodeB, _ := newService(t, s, b)
		reg := registerAlice(t, nodeA, account.RegisterParams{})
		other, err := nodeA.Login(ctx, account.LoginParams{User: "alice", Password: alicePassword})
		if err != nil {
			t.Fatal(err)
		}
		mustAuth(t, nodeB, reg.AccessToken)
		mustAuth(t, nodeB, other.AccessToken)
		if err := nodeA.Logout(ctx, mustAuth(t, nodeA, reg.AccessToken)); err != nil {
			t.Fatal(err)
		}
		// Node A answers from the database at once; node B once the bus message arrived.
		_, err = nodeA.Authenticate(ctx, reg.AccessToken)
		wantUnknownToken(t, "logged-out token on the node that logged out", err, false)
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err = nodeB.Authenticate(ctx, reg.AccessToken)
			if err != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		wantUnknownToken(t, "logged-out token on the other node", err, false)
		mustAuth(t, nodeB, other.AccessToken) // other devices are unaffected
	})
}
