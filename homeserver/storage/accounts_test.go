package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func TestAccounts(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		alice := storage.Account{Localpart: "alice", PasswordHash: "h1", Admin: true, CreatedTS: 42}
		mustWrite(t, s, func(c storage.Conn) error { return c.CreateAccount(ctx, alice) })

		got, err := s.Read().Account(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if got != alice {
			t.Fatalf("Account = %+v, want %+v", got, alice)
		}

		err = s.Write(ctx, func(c storage.Conn) error {
			return c.CreateAccount(ctx, storage.Account{Localpart: "alice", CreatedTS: 43})
		})
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("second CreateAccount: err = %v, want ErrConflict", err)
		}

		if _, err := s.Read().Account(ctx, "nobody"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Account of unknown user: err = %v, want ErrNotFound", err)
		}
		if ok, err := s.Read().AccountExists(ctx, "alice"); err != nil || !ok {
			t.Fatalf("AccountExists(alice) = %v, %v", ok, err)
		}
		if ok, err := s.Read().AccountExists(ctx, "nobody"); err != nil || ok {
			t.Fatalf("AccountExists(nobody) = %v, %v", ok, err)
		}

		for name, fn := range map[string]func(c storage.Conn) error{
			"SetPasswordHash":   func(c storage.Conn) error { return c.SetPasswordHash(ctx, "nobody", "x") },
			"SetAdmin":          func(c storage.Conn) error { return c.SetAdmin(ctx, "nobody", true) },
			"DeactivateAccount": func(c storage.Conn) error { return c.DeactivateAccount(ctx, "nobody") },
		} {
			if err := s.Write(ctx, fn); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("%s of unknown user: err = %v, want ErrNotFound", name, err)
			}
		}

		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.CreateAccount(ctx, storage.Account{Localpart: "bob", Guest: true, CreatedTS: 1}); err != nil {
				return err
			}
			if err := c.SetPasswordHash(ctx, "alice", "h2"); err != nil {
				return err
			}
			return c.SetAdmin(ctx, "alice", false)
		})
		got, _ = s.Read().Account(ctx, "alice")
		if got.PasswordHash != "h2" || got.Admin {
			t.Fatalf("after SetPasswordHash/SetAdmin: %+v", got)
		}
		if n, err := s.Read().CountAccounts(ctx); err != nil || n != 2 {
			t.Fatalf("CountAccounts = %d, %v; want 2", n, err)
		}

		mustWrite(t, s, func(c storage.Conn) error { return c.DeactivateAccount(ctx, "alice") })
		got, _ = s.Read().Account(ctx, "alice")
		if !got.Deactivated || got.PasswordHash != "" {
			t.Fatalf("after DeactivateAccount: %+v, want deactivated with no password", got)
		}
		if n, err := s.Read().CountAccounts(ctx); err != nil || n != 1 {
			t.Fatalf("CountAccounts after deactivation = %d, %v; want 1", n, err)
		}
		// A deactivated user ID is never reused.
		err = s.Write(ctx, func(c storage.Conn) error {
			return c.CreateAccount(ctx, storage.Account{Localpart: "alice", CreatedTS: 44})
		})
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("CreateAccount over a deactivated account: err = %v, want ErrConflict", err)
		}
	})
}

func strPtr(s string) *string { return &s }

func TestDevicesUpsert(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		upsert := func(d storage.Device) {
			t.Helper()
			mustWrite(t, s, func(c storage.Conn) error { return c.UpsertDevice(ctx, d) })
		}
		device := func() storage.Device {
			t.Helper()
			d, err := s.Read().Device(ctx, "alice", "DEV")
			if err != nil {
				t.Fatal(err)
			}
			return d
		}

		upsert(storage.Device{Localpart: "alice", DeviceID: "DEV", DisplayName: strPtr("phone"), CreatedTS: 100, LastSeenIP: "10.0.0.1"})
		d := device()
		if d.DisplayName == nil || *d.DisplayName != "phone" || d.CreatedTS != 100 || d.LastSeenTS != 100 || d.LastSeenIP != "10.0.0.1" {
			t.Fatalf("new device = %+v", d)
		}

		// Logging in again with the same device_id and no name keeps created_ts and the name.
		upsert(storage.Device{Localpart: "alice", DeviceID: "DEV", CreatedTS: 200, LastSeenIP: "10.0.0.2"})
		d = device()
		if d.DisplayName == nil || *d.DisplayName != "phone" {
			t.Fatalf("display name after upsert without a name = %v, want phone", d.DisplayName)
		}
		if d.CreatedTS != 100 {
			t.Fatalf("created_ts after upsert = %d, want 100", d.CreatedTS)
		}
		if d.LastSeenTS != 200 || d.LastSeenIP != "10.0.0.2" {
			t.Fatalf("last seen after upsert = %d %q, want 200 10.0.0.2", d.LastSeenTS, d.LastSeenIP)
		}

		// A new name replaces the old one.
		upsert(storage.Device{Localpart: "alice", DeviceID: "DEV", DisplayName: strPtr("tablet"), CreatedTS: 300})
		if d = device(); d.DisplayName == nil || *d.DisplayName != "tablet" || d.CreatedTS != 100 {
			t.Fatalf("after upsert with a new name: %+v", d)
		}

		// A device without a name reads back as nil.
		upsert(storage.Device{Localpart: "alice", DeviceID: "NONAME", CreatedTS: 400})
		if d, err := s.Read().Device(ctx, "alice", "NONAME"); err != nil || d.DisplayName != nil {
			t.Fatalf("unnamed device = %+v, %v", d, err)
		}

		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.SetDeviceDisplayName(ctx, "alice", "DEV", "laptop"); err != nil {
				return err
			}
			return c.TouchDevice(ctx, "alice", "DEV", 500, "10.0.0.3")
		})
		if d = device(); *d.DisplayName != "laptop" || d.LastSeenTS != 500 || d.LastSeenIP != "10.0.0.3" {
			t.Fatalf("after rename and touch: %+v", d)
		}
		err := s.Write(ctx, func(c storage.Conn) error { return c.SetDeviceDisplayName(ctx, "alice", "MISSING", "x") })
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("renaming a missing device: err = %v, want ErrNotFound", err)
		}
		if _, err := s.Read().Device(ctx, "bob", "DEV"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("another user's device: err = %v, want ErrNotFound", err)
		}

		devs, err := s.Read().Devices(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if ids := deviceIDs(devs); !slices.Equal(ids, []string{"DEV", "NONAME"}) {
			t.Fatalf("Devices = %v, want [DEV NONAME] (oldest first)", ids)
		}
	})
}

func deviceIDs(devs []storage.Device) []string {
	var ids []string
	for _, d := range devs {
		ids = append(ids, d.DeviceID)
	}
	return ids
}

// addDeviceWithTokens creates a device with one access token and one refresh token, named after it.
func addDeviceWithTokens(t *testing.T, s *storage.Store, localpart, deviceID string) {
	t.Helper()
	ctx := context.Background()
	mustWrite(t, s, func(c storage.Conn) error {
		if err := c.UpsertDevice(ctx, storage.Device{Localpart: localpart, DeviceID: deviceID, CreatedTS: 1}); err != nil {
			return err
		}
		if err := c.InsertRefreshToken(ctx, storage.RefreshToken{Hash: "rt-" + localpart + deviceID, Localpart: localpart, DeviceID: deviceID, CreatedTS: 1}); err != nil {
			return err
		}
		return c.InsertAccessToken(ctx, storage.AccessToken{Hash: "at-" + localpart + deviceID, Localpart: localpart, DeviceID: deviceID,
			RefreshHash: "rt-" + localpart + deviceID, ExpiresTS: 1000, CreatedTS: 1})
	})
}

// hasTokens reports whether the device's access and refresh tokens (from addDeviceWithTokens) exist.
func hasTokens(t *testing.T, s *storage.Store, localpart, deviceID string) (access, refresh bool) {
	t.Helper()
	ctx := context.Background()
	_, err := s.Read().AccessToken(ctx, "at-"+localpart+deviceID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	access = err == nil
	_, err = s.Read().RefreshToken(ctx, "rt-"+localpart+deviceID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return access, err == nil
}

func TestDeleteDevice(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.CreateAccount(ctx, storage.Account{Localpart: "alice", CreatedTS: 1}); err != nil {
				return err
			}
			return c.CreateAccount(ctx, storage.Account{Localpart: "bob", CreatedTS: 1})
		})
		addDeviceWithTokens(t, s, "alice", "A")
		addDeviceWithTokens(t, s, "alice", "B")
		addDeviceWithTokens(t, s, "bob", "A")

		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteDevice(ctx, "alice", "A") })
		if _, err := s.Read().Device(ctx, "alice", "A"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted device: err = %v, want ErrNotFound", err)
		}
		if a, r := hasTokens(t, s, "alice", "A"); a || r {
			t.Fatalf("tokens of the deleted device remain: access %v, refresh %v", a, r)
		}
		// Other devices, including another user's device with the same ID, keep their tokens.
		for _, d := range [][2]string{{"alice", "B"}, {"bob", "A"}} {
			if a, r := hasTokens(t, s, d[0], d[1]); !a || !r {
				t.Fatalf("tokens of %s/%s: access %v, refresh %v; want both", d[0], d[1], a, r)
			}
		}
		// Deleting a missing device is not an error.
		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteDevice(ctx, "alice", "A") })
	})
}

func TestDeleteDevicesExcept(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.CreateAccount(ctx, storage.Account{Localpart: "alice", CreatedTS: 1}); err != nil {
				return err
			}
			return c.CreateAccount(ctx, storage.Account{Localpart: "bob", CreatedTS: 1})
		})
		for _, id := range []string{"A", "B", "C"} {
			addDeviceWithTokens(t, s, "alice", id)
		}
		addDeviceWithTokens(t, s, "bob", "A")

		var deleted []string
		mustWrite(t, s, func(c storage.Conn) error {
			var err error
			deleted, err = c.DeleteDevicesExcept(ctx, "alice", "B")
			return err
		})
		slices.Sort(deleted)
		if !slices.Equal(deleted, []string{"A", "C"}) {
			t.Fatalf("deleted = %v, want [A C]", deleted)
		}
		devs, err := s.Read().Devices(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if ids := deviceIDs(devs); !slices.Equal(ids, []string{"B"}) {
			t.Fatalf("remaining devices = %v, want [B]", ids)
		}
		for _, id := range []string{"A", "C"} {
			if a, r := hasTokens(t, s, "alice", id); a || r {
				t.Fatalf("tokens of deleted device %s remain: access %v, refresh %v", id, a, r)
			}
		}
		if a, r := hasTokens(t, s, "alice", "B"); !a || !r {
			t.Fatalf("tokens of the kept device: access %v, refresh %v; want both", a, r)
		}
		if a, r := hasTokens(t, s, "bob", "A"); !a || !r {
			t.Fatalf("another user's tokens: access %v, refresh %v; want both", a, r)
		}

		// keep "" deletes every device.
		mustWrite(t, s, func(c storage.Conn) error {
			var err error
			deleted, err = c.DeleteDevicesExcept(ctx, "alice", "")
			return err
		})
		if !slices.Equal(deleted, []string{"B"}) {
			t.Fatalf("deleted = %v, want [B]", deleted)
		}
		if devs, _ := s.Read().Devices(ctx, "alice"); len(devs) != 0 {
			t.Fatalf("devices left: %v", deviceIDs(devs))
		}
	})
}
