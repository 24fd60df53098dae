package account

import (
	"context"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// CreateDeviceIn creates a device that has no access token, inside the caller's transaction: a
// dehydrated device (MSC3814), which a client keeps encrypted on the server and never logs in
// with. Keys can be uploaded for it like for any device. The caller announces it after commit
// with AnnounceDevice.
func (s *Service) CreateDeviceIn(ctx context.Context, c storage.Conn, localpart, deviceID string, name *string) error {
	return c.UpsertDevice(ctx, storage.Device{Localpart: localpart, DeviceID: deviceID, DisplayName: name, CreatedTS: s.nowMS()})
}

// AnnounceDevice tells other components and nodes that a device created or deleted outside this
// package (a dehydrated device) appeared or went away; call it after commit.
func (s *Service) AnnounceDevice(localpart, deviceID string, deleted bool) {
	s.announceDevice(s.UserID(localpart), deviceID, deleted)
}
