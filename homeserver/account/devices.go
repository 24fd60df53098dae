package account

import (
	"context"
	"errors"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Devices lists a user's devices.
func (s *Service) Devices(ctx context.Context, localpart string) ([]storage.Device, error) {
	return s.store.Read().Devices(ctx, localpart)
}

// Device reads one device; M_NOT_FOUND if the user has no such device.
func (s *Service) Device(ctx context.Context, localpart, deviceID string) (storage.Device, error) {
	d, err := s.store.Read().Device(ctx, localpart, deviceID)
	if errors.Is(err, storage.ErrNotFound) {
		return d, spec.ErrNotFound.With("Unknown device")
	}
	return d, err
}

// RenameDevice sets a device's display name; M_NOT_FOUND if the user has no such device.
func (s *Service) RenameDevice(ctx context.Context, localpart, deviceID, name string) error {
	err := s.store.Write(ctx, func(c storage.Conn) error {
		if err := c.SetDeviceDisplayName(ctx, localpart, deviceID, name); err != nil {
			return err
		}
		// The name is part of what /keys/query returns: room-mates refresh the device list.
		_, err := c.RecordDeviceListChange(ctx, s.UserID(localpart).String())
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return spec.ErrNotFound.With("Unknown device")
	}
	if err == nil {
		s.announceDevice(s.UserID(localpart), deviceID, false)
	}
	return err
}

// DeleteDevices deletes devices of a user with their tokens. Unknown IDs are ignored, as the spec
// asks of /delete_devices.
func (s *Service) DeleteDevices(ctx context.Context, localpart string, deviceIDs []string) error {
	err := s.store.WriteRetry(ctx, func(c storage.Conn) error {
		for _, id := range deviceIDs {
			if err := c.DeleteDevice(ctx, localpart, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.revokeTokens(localpart)
	for _, id := range deviceIDs {
		s.announceDevice(s.UserID(localpart), id, true)
	}
	return nil
}

// ChangePassword sets a new password. With logoutDevices, every other device of the user is deleted
// with its tokens; the caller's device (keepDevice) stays logged in.
func (s *Service) ChangePassword(ctx context.Context, localpart, newPassword string, logoutDevices bool, keepDevice string) error {
	if err := s.CheckPasswordStrength(newPassword); err != nil {
		return err
	}
	hash, err := HashPassword(newPassword)
	if err != nil {
		return err
	}
	var deleted []string
	err = s.store.WriteRetry(ctx, func(c storage.Conn) error {
		if err := c.SetPasswordHash(ctx, localpart, hash); err != nil {
			return err
		}
		if logoutDevices {
			deleted, err = c.DeleteDevicesExcept(ctx, localpart, keepDevice)
		}
		return err
	})
	s.revokeTokens(localpart)
	for _, d := range deleted {
		s.announceDevice(s.UserID(localpart), d, true)
	}
	return err
}

// Deactivate permanently disables an account: its password, devices, tokens and profile go; its user
// ID is never handed out again. With erase, its account data goes too.
func (s *Service) Deactivate(ctx context.Context, localpart string, erase bool) error {
	var deleted []string
	err := s.store.WriteRetry(ctx, func(c storage.Conn) error {
		if err := c.DeactivateAccount(ctx, localpart); err != nil {
			return err
		}
		var err error
		if deleted, err = c.DeleteDevicesExcept(ctx, localpart, ""); err != nil {
			return err
		}
		if err := c.DeleteProfile(ctx, localpart); err != nil {
			return err
		}
		if err := c.DeleteOpenIDTokensOf(ctx, localpart); err != nil {
			return err
		}
		if err := c.DeleteUserE2EE(ctx, localpart, s.UserID(localpart).String()); err != nil {
			return err
		}
		if erase {
			return c.DeleteAccountDataOf(ctx, localpart)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.revokeTokens(localpart)
	for _, d := range deleted {
		s.announceDevice(s.UserID(localpart), d, true)
	}
	s.log.InfoContext(ctx, "account deactivated", "user_id", s.UserID(localpart), "erase", erase)
	return nil
}

// Exists reports whether the local user has an account (deactivated ones included).
func (s *Service) Exists(ctx context.Context, localpart string) (bool, error) {
	return s.store.Read().AccountExists(ctx, localpart)
}
