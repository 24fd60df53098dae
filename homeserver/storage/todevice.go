package storage

import (
	"context"
	"database/sql"
	"strings"
)

// StreamToDevice is the stream of to-device messages: one position per sendToDevice request.
const StreamToDevice = "to_device"

// ToDeviceMessage is one message for one local device.
type ToDeviceMessage struct {
	Localpart string
	DeviceID  string
	StreamPos int64
	Sender    string
	Type      string
	Content   string // JSON object
}

// InsertToDeviceTxn records a sendToDevice transaction of a device. It reports false, and stores
// nothing, when the device already used (eventType, txnID): the request is a retry.
func (c Conn) InsertToDeviceTxn(ctx context.Context, localpart, deviceID, eventType, txnID string, ts int64) (bool, error) {
	res, err := c.exec(ctx, `INSERT INTO to_device_txns (localpart, device_id, event_type, txn_id, created_ts)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, localpart, deviceID, eventType, txnID, ts)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// DevicesOf lists the device IDs of each of the users (localparts) that has devices.
func (c Conn) DevicesOf(ctx context.Context, localparts []string) (map[string][]string, error) {
	out := make(map[string][]string, len(localparts))
	for start := 0; start < len(localparts); start += 500 {
		chunk := localparts[start:min(start+500, len(localparts))]
		rows, err := collect(ctx, c, `SELECT localpart, device_id FROM devices WHERE localpart IN (`+placeholders(1, len(chunk))+`)`,
			stringArgs(chunk), scanPair)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out[r[0]] = append(out[r[0]], r[1])
		}
	}
	return out, nil
}

func scanPair(r *sql.Rows) ([2]string, error) {
	var p [2]string
	return p, r.Scan(&p[0], &p[1])
}

// FullToDeviceQueues returns the devices of the users (localparts) that have at least limit
// messages waiting, as localpart → device IDs.
func (c Conn) FullToDeviceQueues(ctx context.Context, localparts []string, limit int) (map[string][]string, error) {
	out := map[string][]string{}
	for start := 0; start < len(localparts); start += 500 {
		chunk := localparts[start:min(start+500, len(localparts))]
		n := len(chunk)
		rows, err := collect(ctx, c, `SELECT localpart, device_id FROM to_device_inbox WHERE localpart IN (`+placeholders(1, n)+`)
			GROUP BY localpart, device_id HAVING COUNT(*) >= $`+itoa(n+1), append(stringArgs(chunk), limit), scanPair)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out[r[0]] = append(out[r[0]], r[1])
		}
	}
	return out, nil
}

// toDeviceBatches are the row counts of one multi-row INSERT: a batch is cut into these sizes,
// largest first, so that only a handful of distinct statements are ever prepared.
var toDeviceBatches = []int{32, 8, 2, 1}

// InsertToDevice stores messages; the caller allocates their StreamPos (NextPosition of
// StreamToDevice) in the same transaction.
func (c Conn) InsertToDevice(ctx context.Context, msgs []ToDeviceMessage) error {
	for len(msgs) > 0 {
		size := 1
		for _, s := range toDeviceBatches {
			if len(msgs) >= s {
				size = s
				break
			}
		}
		var b strings.Builder
		b.WriteString(`INSERT INTO to_device_inbox (localpart, device_id, stream_pos, sender, event_type, content) VALUES `)
		args := make([]any, 0, 6*size)
		for i, m := range msgs[:size] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + placeholders(6*i+1, 6) + ")")
			args = append(args, m.Localpart, m.DeviceID, m.StreamPos, m.Sender, m.Type, m.Content)
		}
		if _, err := c.exec(ctx, b.String(), args...); err != nil {
			return err
		}
		msgs = msgs[size:]
	}
	return nil
}

// ToDeviceMessages reads up to limit messages of a device with positions in (after, upto], oldest
// first.
func (c Conn) ToDeviceMessages(ctx context.Context, localpart, deviceID string, after, upto int64, limit int) ([]ToDeviceMessage, error) {
	return collect(ctx, c, `SELECT stream_pos, sender, event_type, content FROM to_device_inbox
		WHERE localpart = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
		ORDER BY stream_pos LIMIT $5`, []any{localpart, deviceID, after, upto, limit}, func(r *sql.Rows) (ToDeviceMessage, error) {
		m := ToDeviceMessage{Localpart: localpart, DeviceID: deviceID}
		return m, r.Scan(&m.StreamPos, &m.Sender, &m.Type, &m.Content)
	})
}

// HasToDeviceUpTo reports whether a device has messages at or below upto.
func (c Conn) HasToDeviceUpTo(ctx context.Context, localpart, deviceID string, upto int64) (bool, error) {
	var one int
	err := c.scanOne(ctx, `SELECT 1 FROM to_device_inbox WHERE localpart = $1 AND device_id = $2 AND stream_pos <= $3 LIMIT 1`,
		[]any{localpart, deviceID, upto}, &one)
	if err == ErrNotFound {
		return false, nil
	}
	return err == nil, err
}

// DeleteToDeviceUpTo deletes a device's messages at or below upto (the device acknowledged them).
func (c Conn) DeleteToDeviceUpTo(ctx context.Context, localpart, deviceID string, upto int64) (int64, error) {
	res, err := c.exec(ctx, `DELETE FROM to_device_inbox WHERE localpart = $1 AND device_id = $2 AND stream_pos <= $3`,
		localpart, deviceID, upto)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// CountToDevice is the number of messages waiting for a device.
func (c Conn) CountToDevice(ctx context.Context, localpart, deviceID string) (int64, error) {
	var n int64
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM to_device_inbox WHERE localpart = $1 AND device_id = $2`, []any{localpart, deviceID}, &n)
	return n, err
}

// DeleteToDeviceOf removes what a device leaves behind in the to-device tables when it is deleted:
// its inbox, its sendToDevice transaction IDs, and its dehydrated-device record.
func (c Conn) DeleteToDeviceOf(ctx context.Context, localpart, deviceID string) error {
	for _, q := range []string{
		`DELETE FROM to_device_inbox WHERE localpart = $1 AND device_id = $2`,
		`DELETE FROM to_device_txns WHERE localpart = $1 AND device_id = $2`,
		`DELETE FROM dehydrated_devices WHERE localpart = $1 AND device_id = $2`,
	} {
		if _, err := c.exec(ctx, q, localpart, deviceID); err != nil {
			return err
		}
	}
	return nil
}

// DehydratedDevice is a user's dehydrated device (MSC3814).
type DehydratedDevice struct {
	Localpart  string
	DeviceID   string
	DeviceData string // JSON object
	CreatedTS  int64
}

// DehydratedDevice reads the user's dehydrated device; ErrNotFound if there is none.
func (c Conn) DehydratedDevice(ctx context.Context, localpart string) (DehydratedDevice, error) {
	d := DehydratedDevice{Localpart: localpart}
	err := c.scanOne(ctx, `SELECT device_id, device_data, created_ts FROM dehydrated_devices WHERE localpart = $1`,
		[]any{localpart}, &d.DeviceID, &d.DeviceData, &d.CreatedTS)
	return d, err
}

// PutDehydratedDevice stores the user's dehydrated device, replacing the record of any previous
// one (the caller deletes the previous device itself).
func (c Conn) PutDehydratedDevice(ctx context.Context, d DehydratedDevice) error {
	_, err := c.exec(ctx, `INSERT INTO dehydrated_devices (localpart, device_id, device_data, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (localpart) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data,
			created_ts = excluded.created_ts`, d.Localpart, d.DeviceID, d.DeviceData, d.CreatedTS)
	return err
}
