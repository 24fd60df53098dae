package storage

import (
	"context"
	"database/sql"
)

// Device is one login of a user.
type Device struct {
	Localpart   string
	DeviceID    string
	DisplayName *string
	CreatedTS   int64
	LastSeenTS  int64
	LastSeenIP  string
}

// UpsertDevice creates the device, or keeps an existing one with the same ID (a client may log in
// again with its device_id). A non-nil display name replaces the old one.
func (c Conn) UpsertDevice(ctx context.Context, d Device) error {
	_, err := c.exec(ctx, `INSERT INTO devices (localpart, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
		VALUES ($1, $2, $3, $4, $4, $5)
		ON CONFLICT (localpart, device_id) DO UPDATE SET
			display_name = COALESCE(excluded.display_name, devices.display_name),
			last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip`,
		d.Localpart, d.DeviceID, d.DisplayName, d.CreatedTS, d.LastSeenIP)
	return err
}

const deviceColumns = `localpart, device_id, display_name, created_ts, last_seen_ts, last_seen_ip`

func scanDevice(r interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var name sql.NullString
	err := r.Scan(&d.Localpart, &d.DeviceID, &name, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP)
	if name.Valid {
		d.DisplayName = &name.String
	}
	return d, err
}

// Device reads one device.
func (c Conn) Device(ctx context.Context, localpart, deviceID string) (Device, error) {
	d, err := scanDevice(c.row(ctx, `SELECT `+deviceColumns+` FROM devices WHERE localpart = $1 AND device_id = $2`,
		localpart, deviceID))
	if err == sql.ErrNoRows {
		return d, ErrNotFound
	}
	return d, err
}

// Devices lists a user's devices, oldest first.
func (c Conn) Devices(ctx context.Context, localpart string) ([]Device, error) {
	return collect(ctx, c, `SELECT `+deviceColumns+` FROM devices WHERE localpart = $1 ORDER BY created_ts, device_id`,
		[]any{localpart}, func(r *sql.Rows) (Device, error) { return scanDevice(r) })
}

// SetDeviceDisplayName renames a device; ErrNotFound if it does not exist.
func (c Conn) SetDeviceDisplayName(ctx context.Context, localpart, deviceID, name string) error {
	return c.execOne(ctx, `UPDATE devices SET display_name = $3 WHERE localpart = $1 AND device_id = $2`, localpart, deviceID, name)
}

// TouchDevice records when and from where a device was last seen.
func (c Conn) TouchDevice(ctx context.Context, localpart, deviceID string, ts int64, ip string) error {
	_, err := c.exec(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE localpart = $1 AND device_id = $2`,
		localpart, deviceID, ts, ip)
	return err
}

// DeleteDevice removes a device with its access and refresh tokens. Deleting a missing device is not
// an error.
func (c Conn) DeleteDevice(ctx context.Context, localpart, deviceID string) error {
	for _, q := range []string{
		`DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2`,
		`DELETE FROM refresh_tokens WHERE localpart = $1 AND device_id = $2`,
		`DELETE FROM devices WHERE localpart = $1 AND device_id = $2`,
	} {
		if _, err := c.exec(ctx, q, localpart, deviceID); err != nil {
			return err
		}
	}
	if err := c.DeleteToDeviceOf(ctx, localpart, deviceID); err != nil { // inbox, txn IDs, dehydrated record
		return err
	}
	if err := c.DeleteDeviceKeys(ctx, localpart, deviceID); err != nil { // keys; a device_lists change (e2eekeys.go)
		return err
	}
	return nil
}

// DeleteDevicesExcept removes every device of the user but keep (and their tokens); keep may be "".
// It returns the IDs of the deleted devices.
func (c Conn) DeleteDevicesExcept(ctx context.Context, localpart, keep string) ([]string, error) {
	devs, err := c.Devices(ctx, localpart)
	if err != nil {
		return nil, err
	}
	var deleted []string
	for _, d := range devs {
		if d.DeviceID == keep {
			continue
		}
		if err := c.DeleteDevice(ctx, localpart, d.DeviceID); err != nil {
			return nil, err
		}
		deleted = append(deleted, d.DeviceID)
	}
	return deleted, nil
}
