package storage

import (
	"context"
	"database/sql"
)

// End-to-end encryption over federation (migration 0013): received to-device EDUs and what this
// server announced of its users' device lists.

// StreamFederationDeviceLists is the stream_counters row holding the device_lists position up to
// which local users' changes were announced to other servers (federation/e2ee.go). It is a
// cursor, not a stream: nothing allocates positions from it.
const StreamFederationDeviceLists = "federation_device_lists"

// InsertReceivedToDevice records an m.direct_to_device EDU of origin. It reports false, and
// stores nothing, when (origin, messageID) was recorded before: the EDU is a repeat.
func (c Conn) InsertReceivedToDevice(ctx context.Context, origin, messageID string, ts int64) (bool, error) {
	res, err := c.exec(ctx, `INSERT INTO federation_to_device_received (origin, message_id, received_ts) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, origin, messageID, ts)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PurgeReceivedToDevice forgets the received to-device EDUs recorded before ts.
func (c Conn) PurgeReceivedToDevice(ctx context.Context, before int64) error {
	_, err := c.exec(ctx, `DELETE FROM federation_to_device_received WHERE received_ts < $1`, before)
	return err
}

// AnnouncedDeviceList is what was last announced to other servers about a local user's devices.
type AnnouncedDeviceList struct {
	// StreamID is the stream_id of the last m.device_list_update sent (0: none yet).
	StreamID int64
	// SigningDigest is the digest of the master and self-signing keys last announced.
	SigningDigest string
	// Devices maps device IDs to the digest of what was announced of them.
	Devices map[string]string
}

// AnnouncedDeviceLists reads what was announced of the users (users never announced get an empty
// list).
func (c Conn) AnnouncedDeviceLists(ctx context.Context, userIDs []string) (map[string]*AnnouncedDeviceList, error) {
	out := make(map[string]*AnnouncedDeviceList, len(userIDs))
	for _, u := range userIDs {
		out[u] = &AnnouncedDeviceList{Devices: map[string]string{}}
	}
	for start := 0; start < len(userIDs); start += maxRoomsPerQuery {
		chunk := userIDs[start:min(start+maxRoomsPerQuery, len(userIDs))]
		in := placeholders(1, len(chunk))
		type userRow struct {
			user, digest string
			stream       int64
		}
		users, err := collect(ctx, c, `SELECT user_id, stream_id, signing_digest FROM device_list_announced_users WHERE user_id IN (`+in+`)`,
			stringArgs(chunk), func(r *sql.Rows) (userRow, error) {
				var x userRow
				return x, r.Scan(&x.user, &x.stream, &x.digest)
			})
		if err != nil {
			return nil, err
		}
		for _, x := range users {
			out[x.user].StreamID, out[x.user].SigningDigest = x.stream, x.digest
		}
		devs, err := collect(ctx, c, `SELECT user_id, device_id, digest FROM device_list_announced_devices WHERE user_id IN (`+in+`)`,
			stringArgs(chunk), func(r *sql.Rows) ([3]string, error) {
				var x [3]string
				return x, r.Scan(&x[0], &x[1], &x[2])
			})
		if err != nil {
			return nil, err
		}
		for _, x := range devs {
			out[x[0]].Devices[x[1]] = x[2]
		}
	}
	return out, nil
}

// AnnouncedStreamID is the stream_id of the last m.device_list_update sent for a user (0: none).
func (c Conn) AnnouncedStreamID(ctx context.Context, userID string) (int64, error) {
	var id int64
	err := c.scanOne(ctx, `SELECT stream_id FROM device_list_announced_users WHERE user_id = $1`, []any{userID}, &id)
	if err == ErrNotFound {
		return 0, nil
	}
	return id, err
}

// PutAnnouncedDeviceList records what was announced of a user: the new stream ID and signing
// digest, the devices announced (device ID → digest) and those announced as deleted.
func (c Conn) PutAnnouncedDeviceList(ctx context.Context, userID string, streamID int64, signingDigest string,
	devices map[string]string, deleted []string) error {
	if _, err := c.exec(ctx, `INSERT INTO device_list_announced_users (user_id, stream_id, signing_digest) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, signing_digest = excluded.signing_digest`,
		userID, streamID, signingDigest); err != nil {
		return err
	}
	for id, digest := range devices {
		if _, err := c.exec(ctx, `INSERT INTO device_list_announced_devices (user_id, device_id, digest) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, device_id) DO UPDATE SET digest = excluded.digest`, userID, id, digest); err != nil {
			return err
		}
	}
	for _, id := range deleted {
		if _, err := c.exec(ctx, `DELETE FROM device_list_announced_devices WHERE user_id = $1 AND device_id = $2`, userID, id); err != nil {
			return err
		}
	}
	return nil
}
