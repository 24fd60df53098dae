package e2ee

import (
	"context"
	"maps"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Positions are the two stream positions of a sync token that key changes depend on: the events
// stream (memberships) and the device_lists stream.
type Positions struct {
	Events      int64
	DeviceLists int64
}

// KeyChanges answers GET /keys/changes for userID between two sync positions:
//   - changed: users sharing a room with userID now (userID included) whose device list or
//     cross-signing keys changed in (from, to], and users who started sharing a room with userID
//     in (from, to] (they joined one of userID's rooms, or userID joined theirs);
//   - left: users who stopped sharing every room with userID in (from, to].
//
// Reads: the users sharing a room now, the device_lists range, the membership events of the
// range in userID's rooms, and the members of the rooms userID joined or left in the range.
func (s *Service) KeyChanges(ctx context.Context, userID string, from, to Positions) (changed, left []string, err error) {
	c := s.store.Read()
	sharingNow, err := c.UsersSharingRoomWith(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	share := make(map[string]bool, len(sharingNow)+1)
	for _, u := range sharingNow {
		share[u] = true
	}
	share[userID] = true

	changedSet, leftSet := map[string]bool{}, map[string]bool{}
	users, err := c.DeviceListChanges(ctx, from.DeviceLists, to.DeviceLists)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range users {
		if share[u] {
			changedSet[u] = true
		}
	}

	ms, err := c.MembershipChangesInRoomsOf(ctx, userID, from.Events, to.Events)
	if err != nil {
		return nil, nil, err
	}
	// The last membership of each (room, user) in the range decides.
	last := map[[2]string]string{}
	for _, m := range ms {
		last[[2]string{m.RoomID, m.UserID}] = m.Membership
	}
	var joinedRooms, leftRooms []string
	for k, membership := range last {
		room, u := k[0], k[1]
		gone := membership == "leave" || membership == "ban"
		switch {
		case u == userID && membership == "join":
			joinedRooms = append(joinedRooms, room)
		case u == userID && gone:
			leftRooms = append(leftRooms, room)
		case membership == "join" && share[u]:
			changedSet[u] = true
		case gone && !share[u]:
			leftSet[u] = true
		}
	}
	if len(joinedRooms)+len(leftRooms) > 0 {
		members, err := c.MembersOfRooms(ctx, slices.Concat(joinedRooms, leftRooms), "join")
		if err != nil {
			return nil, nil, err
		}
		joined := make(map[string]bool, len(joinedRooms))
		for _, r := range joinedRooms {
			joined[r] = true
		}
		for _, m := range members {
			switch {
			case m.UserID == userID:
			case joined[m.RoomID] && share[m.UserID]:
				changedSet[m.UserID] = true
			case !joined[m.RoomID] && !share[m.UserID]:
				leftSet[m.UserID] = true
			}
		}
	}
	for u := range changedSet {
		delete(leftSet, u)
	}
	delete(leftSet, userID)
	return slices.Sorted(maps.Keys(changedSet)), slices.Sorted(maps.Keys(leftSet)), nil
}

// DeviceListsPosition is the latest position of the device_lists stream (0 when nothing changed
// yet): the sync token's device-list part.
func (s *Service) DeviceListsPosition(ctx context.Context) (int64, error) {
	return s.store.Read().Position(ctx, storage.StreamDeviceLists)
}

// CurrentPositions are the latest positions of the events and device_lists streams (one query).
func (s *Service) CurrentPositions(ctx context.Context) (Positions, error) {
	pos, err := s.store.Read().Positions(ctx, storage.StreamEvents, storage.StreamDeviceLists)
	if err != nil {
		return Positions{}, err
	}
	return Positions{Events: pos[storage.StreamEvents], DeviceLists: pos[storage.StreamDeviceLists]}, nil
}

// ChangedUsers lists the users, of any server, whose device list or cross-signing keys changed at
// a device_lists position in (from, to]. The caller keeps those that share a room with the syncing
// user. A user who changed again after to is left out; the range after to has them.
func (s *Service) ChangedUsers(ctx context.Context, from, to int64) ([]string, error) {
	return s.store.Read().DeviceListChanges(ctx, from, to)
}

// KeyCounts returns what a device's /sync reports: its unclaimed one-time keys per algorithm
// (device_one_time_keys_count) and the algorithms of its unused fallback keys
// (device_unused_fallback_key_types, never nil). One query.
func (s *Service) KeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	localpart, ok := s.localUser(userID)
	if !ok {
		return map[string]int{}, []string{}, nil
	}
	return s.store.Read().KeyCounts(ctx, localpart, deviceID)
}

// DeleteDeviceKeys removes the keys of devices inside the caller's transaction (device deletion)
// and records a device-list change for each device that had keys. storage.Conn.DeleteDevice does
// this for every deleted device already; this is for callers that delete keys without the device.
// The caller wakes the user's room-mates after commit (the account service's device announcement
// does, through ReceiveDeviceChange).
func (s *Service) DeleteDeviceKeys(ctx context.Context, c storage.Conn, localpart string, deviceIDs []string) error {
	for _, id := range deviceIDs {
		if err := c.DeleteDeviceKeys(ctx, localpart, id); err != nil {
			return err
		}
	}
	return nil
}
