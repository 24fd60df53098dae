package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Dehydrated devices (MSC3814, unstable prefix org.matrix.msc3814.v1). A user has at most one: a
// device without access token whose encrypted pickle (device_data) the server keeps, and which
// receives to-device messages like any device. A new client of the user fetches the pickle,
// rehydrates it, and reads the messages through Events, which hands them out in batches and
// deletes a batch once the client asks for the next one.

// DehydratedKeys are the keys a dehydrated device brings in its PUT, as in /keys/upload.
type DehydratedKeys struct {
	DeviceKeys   json.RawMessage `json:"device_keys,omitempty"`
	OneTimeKeys  json.RawMessage `json:"one_time_keys,omitempty"`
	FallbackKeys json.RawMessage `json:"fallback_keys,omitempty"`
}

// DehydratedKeyUploader stores the keys of a new dehydrated device (the /keys/upload logic).
type DehydratedKeyUploader interface {
	UploadDehydratedKeys(ctx context.Context, userID, deviceID string, keys DehydratedKeys) error
}

// Dehydrated is the dehydrated-device service.
type Dehydrated struct {
	store    *storage.Store
	accounts *account.Service
	toDevice *ToDevice
	keys     DehydratedKeyUploader
	log      *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// NewDehydrated builds the service. keys may be nil: the keys of a PUT are then not stored.
func NewDehydrated(store *storage.Store, accounts *account.Service, toDevice *ToDevice, keys DehydratedKeyUploader, log *slog.Logger) *Dehydrated {
	return &Dehydrated{store: store, accounts: accounts, toDevice: toDevice, keys: keys, log: log, Now: time.Now}
}

// SetKeyUploader sets where the keys of new dehydrated devices go (before serving).
func (d *Dehydrated) SetKeyUploader(keys DehydratedKeyUploader) { d.keys = keys }

// DehydratedDevice is the response of GET /dehydrated_device.
type DehydratedDevice struct {
	DeviceID   string          `json:"device_id"`
	DeviceData json.RawMessage `json:"device_data"`
}

var errNoDehydratedDevice = spec.ErrNotFound.With("No dehydrated device available")

// Put is PUT /dehydrated_device: deviceID becomes the user's dehydrated device, replacing the
// previous one (its device, inbox and keys go), and keys are stored for it. deviceID may not be
// one of the user's other devices.
func (d *Dehydrated) Put(ctx context.Context, localpart, deviceID string, data json.RawMessage, name *string, keys DehydratedKeys) error {
	switch {
	case deviceID == "":
		return spec.ErrMissingParam.With("device_id is required")
	case len(deviceID) > 255:
		return spec.ErrInvalidParam.With("device_id is too long")
	case len(data) == 0 || string(data) == "null":
		return spec.ErrMissingParam.With("device_data is required")
	case !rawIsObject(data):
		return spec.ErrBadJSON.With("device_data must be an object")
	}
	var replaced string
	err := d.store.Write(ctx, func(c storage.Conn) error {
		replaced = ""
		old, err := c.DehydratedDevice(ctx, localpart)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if err == nil {
			replaced = old.DeviceID
		}
		if replaced != deviceID {
			if _, err := c.Device(ctx, localpart, deviceID); err == nil {
				return spec.ErrInvalidParam.With("device_id is the ID of another device of yours")
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		if replaced != "" {
			if err := c.DeleteDevice(ctx, localpart, replaced); err != nil {
				return err
			}
		}
		if err := d.accounts.CreateDeviceIn(ctx, c, localpart, deviceID, name); err != nil {
			return err
		}
		return c.PutDehydratedDevice(ctx, storage.DehydratedDevice{Localpart: localpart, DeviceID: deviceID,
			DeviceData: string(data), CreatedTS: d.Now().UnixMilli()})
	})
	if err != nil {
		return err
	}
	if replaced != "" && replaced != deviceID {
		d.accounts.AnnounceDevice(localpart, replaced, true)
	}
	d.accounts.AnnounceDevice(localpart, deviceID, false)
	if d.keys == nil {
		return nil
	}
	if err := d.keys.UploadDehydratedKeys(ctx, d.accounts.UserID(localpart).String(), deviceID, keys); err != nil {
		// A dehydrated device without keys is of no use: take it back.
		if _, derr := d.Delete(ctx, localpart); derr != nil {
			d.log.WarnContext(ctx, "delete dehydrated device after failed key upload", "err", derr)
		}
		return err
	}
	return nil
}

// Get is GET /dehydrated_device.
func (d *Dehydrated) Get(ctx context.Context, localpart string) (DehydratedDevice, error) {
	dev, err := d.store.Read().DehydratedDevice(ctx, localpart)
	if errors.Is(err, storage.ErrNotFound) {
		return DehydratedDevice{}, errNoDehydratedDevice
	}
	if err != nil {
		return DehydratedDevice{}, err
	}
	return DehydratedDevice{DeviceID: dev.DeviceID, DeviceData: json.RawMessage(dev.DeviceData)}, nil
}

// Delete is DELETE /dehydrated_device: the device goes with its inbox and keys. It returns the
// device's ID.
func (d *Dehydrated) Delete(ctx context.Context, localpart string) (string, error) {
	var id string
	err := d.store.Write(ctx, func(c storage.Conn) error {
		dev, err := c.DehydratedDevice(ctx, localpart)
		if err != nil {
			return err
		}
		id = dev.DeviceID
		return c.DeleteDevice(ctx, localpart, id)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return "", errNoDehydratedDevice
	}
	if err != nil {
		return "", err
	}
	d.accounts.AnnounceDevice(localpart, id, true)
	return id, nil
}

// Events is POST /dehydrated_device/{device_id}/events: the to-device messages of the user's
// dehydrated device after nextBatch ("" for the first call), at most limit
// (DefaultToDeviceSyncLimit if <= 0). The messages up to nextBatch were received: they are
// deleted. next is "" when no message is left, which tells the client it has them all.
func (d *Dehydrated) Events(ctx context.Context, localpart, deviceID, nextBatch string, limit int) (events []json.RawMessage, next string, err error) {
	dev, err := d.store.Read().DehydratedDevice(ctx, localpart)
	if errors.Is(err, storage.ErrNotFound) || err == nil && dev.DeviceID != deviceID {
		return nil, "", spec.ErrForbidden.With("Not your dehydrated device")
	}
	if err != nil {
		return nil, "", err
	}
	var after int64
	if nextBatch != "" {
		if after, err = strconv.ParseInt(nextBatch, 10, 64); err != nil || after < 0 {
			return nil, "", spec.ErrInvalidParam.With("Invalid next_batch")
		}
		if err := d.toDevice.ack(ctx, localpart, deviceID, after); err != nil {
			return nil, "", err
		}
	}
	upto, err := d.toDevice.Position(ctx)
	if err != nil {
		return nil, "", err
	}
	events, last, err := d.toDevice.pending(ctx, localpart, deviceID, after, upto, limit)
	if err != nil || len(events) == 0 {
		return events, "", err
	}
	return events, strconv.FormatInt(last, 10), nil
}
