package sync

import (
	"context"
	gosync "sync"
	"time"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The end-to-end encryption sections of /sync: to_device, device_lists,
// device_one_time_keys_count and device_unused_fallback_key_types.

// toDeviceLimit is how many to-device messages one response carries; the rest follow at once.
const toDeviceLimit = 100

// DeviceLists is the device_lists section.
type DeviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// SetE2EE gives the service the key and to-device services (nil: the sections are left out).
func (s *Service) SetE2EE(keys *e2ee.Service, toDevice *e2ee.ToDevice) {
	s.keys, s.toDevice = keys, toDevice
}

// fillToDevice delivers the device's to-device messages after the since token and deletes the ones
// the since token shows it already has: a message is deleted only once the device syncs with a
// token past it, so a response lost on the way costs nothing but a repeat.
func (s *Service) fillToDevice(ctx context.Context, req Request, since *Token, from Token, tdPos int64, resp *Response, to *Token) error {
	to.ToDevice = max(tdPos, from.ToDevice)
	if s.toDevice == nil || req.DeviceID == "" {
		return nil
	}
	if since != nil && since.ToDevice > 0 && !req.NoAck && s.acks.advance(req.UserID, req.DeviceID, since.ToDevice) {
		if err := s.toDevice.Ack(ctx, req.UserID, req.DeviceID, since.ToDevice); err != nil {
			s.acks.forget(req.UserID, req.DeviceID)
			return err
		}
	}
	if tdPos <= from.ToDevice {
		return nil // nothing was sent to anyone since
	}
	events, last, err := s.toDevice.Pending(ctx, req.UserID, req.DeviceID, from.ToDevice, tdPos, toDeviceLimit)
	if err != nil {
		return err
	}
	to.ToDevice = max(last, from.ToDevice)
	if len(events) > 0 {
		resp.ToDevice = &EventList{Events: events}
	}
	return nil
}

// fillKeys sets the one-time key counts and unused fallback key types of the device, and on an
// incremental sync the users whose devices changed (or who started or stopped sharing a room).
func (s *Service) fillKeys(ctx context.Context, req Request, since *Token, from, to Token, jobs []*roomJob, resp *Response) error {
	if s.keys == nil {
		return nil
	}
	if req.DeviceID != "" {
		kc := &s.notifier.keyCounts
		e, ok, gen := kc.get(req.UserID, req.DeviceID)
		if !ok {
			counts, fallback, err := s.keys.KeyCounts(ctx, req.UserID, req.DeviceID)
			if err != nil {
				return err
			}
			if _, ok := counts["signed_curve25519"]; !ok {
				counts["signed_curve25519"] = 0 // clients upload keys when they see none are left
			}
			e = keyCountEntry{counts: counts, encoded: appendCounts(nil, counts), fallback: fallback}
			kc.put(req.UserID, req.DeviceID, e, gen)
		}
		resp.OneTimeKeysCount, resp.countsJSON, resp.UnusedFallbackKeyTypes = e.counts, e.encoded, e.fallback
	}
	if since == nil || !membershipsMayHaveChanged(from, to, jobs) && to.DeviceLists <= from.DeviceLists {
		return nil
	}
	changed, left, err := s.keys.KeyChanges(ctx, req.UserID,
		e2ee.Positions{Events: from.Events, DeviceLists: from.DeviceLists},
		e2ee.Positions{Events: to.Events, DeviceLists: to.DeviceLists})
	if err != nil {
		return err
	}
	if len(changed)+len(left) > 0 {
		resp.DeviceLists = &DeviceLists{Changed: nonNil(changed), Left: nonNil(left)}
	}
	return nil
}

// membershipsMayHaveChanged reports whether anyone may have joined or left one of the user's rooms
// between the tokens: the response shows every event of the range unless a timeline is limited.
func membershipsMayHaveChanged(from, to Token, jobs []*roomJob) bool {
	if to.Events <= from.Events {
		return false
	}
	for _, j := range jobs {
		if j.leave || j.limited || j.membersChanged || j.from == 0 && from.Events > 0 {
			return true
		}
		for _, e := range j.raw {
			if e.Type == room.TypeMember && e.StreamPos > from.Events {
				return true
			}
		}
	}
	return false
}

// ackCache remembers, per device, the to-device position up to which messages were deleted, so
// that the syncs that follow with the same token do not ask the database again.
type ackCache struct {
	mu    gosync.Mutex
	acked map[[2]string]int64
}

// advance reports whether messages up to pos may still be waiting for deletion, and records that
// they will not be once the caller deleted them.
func (c *ackCache) advance(userID, deviceID string, pos int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [2]string{userID, deviceID}
	if c.acked[k] >= pos {
		return false
	}
	if c.acked == nil || len(c.acked) > 100_000 {
		c.acked = make(map[[2]string]int64)
	}
	c.acked[k] = pos
	return true
}

func (c *ackCache) forget(userID, deviceID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.acked, [2]string{userID, deviceID})
}

// e2eeStreams are the stream_counters the E2EE sections read, with the others.
var e2eeStreams = []string{storage.StreamToDevice, storage.StreamDeviceLists}

// keyCountCache keeps each device's one-time key counts and unused fallback key types between
// syncs: every response carries them, and they change only when the device uploads keys or
// someone claims them, both of which wake the owner's syncs on every node through BusWaker, whose
// wake-ups (and device changes) drop the user's entries. A read that started before
// such a wake-up does not store its (possibly old) answer: entries are stored only if the user's
// generation did not move in between. Entries expire after keyCountTTL, in case a bus message
// was lost. The maps shared with responses are never modified.
type keyCountCache struct {
	mu      gosync.Mutex
	gen     map[string]uint64 // per user, moved by every wake-up
	entries map[[2]string]keyCountEntry
}

type keyCountEntry struct {
	counts   map[string]int
	encoded  []byte // counts as JSON (Response.countsJSON)
	fallback []string
	gen      uint64
	expires  time.Time
}

const (
	keyCountTTL = time.Minute
	maxKeyCount = 100_000
)

// get returns the cached counts of a device, or ok false and the generation to pass to put.
func (c *keyCountCache) get(userID, deviceID string) (e keyCountEntry, ok bool, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gen = c.gen[userID]
	e, found := c.entries[[2]string{userID, deviceID}]
	if found && e.gen == gen && time.Now().Before(e.expires) {
		return e, true, gen
	}
	return keyCountEntry{}, false, gen
}

func (c *keyCountCache) put(userID, deviceID string, e keyCountEntry, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen[userID] != gen {
		return
	}
	if c.entries == nil || len(c.entries) >= maxKeyCount {
		c.entries = make(map[[2]string]keyCountEntry)
	}
	e.gen, e.expires = gen, time.Now().Add(keyCountTTL)
	c.entries[[2]string{userID, deviceID}] = e
}

func (c *keyCountCache) invalidate(users []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == nil || len(c.gen) >= maxKeyCount {
		// Starting over: entries of users dropped from gen would match generation 0 again.
		c.gen = make(map[string]uint64)
		c.entries = nil
	}
	for _, u := range users {
		c.gen[u]++
	}
}
