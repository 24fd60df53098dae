package e2ee

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Other servers' side of end-to-end encryption (server-server API, "Device Management",
// "End-to-End Encryption", "Send-to-device messaging"). Federation (federation/e2ee.go) serves our
// users' keys with QueryKeys/ClaimKeys and FederationDeviceList, and hands what other servers send
// to RemoteDeviceListChanged and ToDevice.ReceiveRemote.
//
// This server keeps no copy of other servers' device lists: a /keys/query for a remote user
// always asks its server. A remote m.device_list_update or m.signing_key_update only records a
// change of that user on the device_lists stream, so that local users sharing a room with them
// see them in device_lists.changed and query again.

// SetRemote gives the service its way to other servers (federation is built after the service).
// Call it before serving.
func (s *Service) SetRemote(r RemoteKeys) { s.opts.Remote = r }

// SetRemote gives the to-device service its way to other servers' users. Call it before serving.
func (t *ToDevice) SetRemote(r RemoteToDevice) { t.opts.Remote = r }

// FederationDevice is one device of a local user as other servers see it.
type FederationDevice struct {
	DeviceID    string
	DisplayName *string
	// Keys is the device's identity-key object with its owner's signatures, without "unsigned";
	// nil when the device uploaded none.
	Keys json.RawMessage
}

// FederationDeviceList is a local user's device list as other servers see it
// (GET /user/devices, m.device_list_update, m.signing_key_update).
type FederationDeviceList struct {
	UserID         string
	Devices        []FederationDevice // sorted by device ID
	MasterKey      json.RawMessage    // nil when none
	SelfSigningKey json.RawMessage    // nil when none
}

// FederationDeviceList reads the devices (with keys and display names) and the master and
// self-signing keys of a local user, with the signatures their owner made. A user who does not
// exist has no devices.
func (s *Service) FederationDeviceList(ctx context.Context, userID string) (*FederationDeviceList, error) {
	localpart, ok := s.localUser(userID)
	if !ok {
		return nil, fmt.Errorf("e2ee: %q is not a local user", userID)
	}
	devs, err := s.store.Read().Devices(ctx, localpart)
	if err != nil {
		return nil, err
	}
	resp := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	var mu gosync.Mutex
	// No requester: only the user's own signatures, which is what every server may see.
	if err := s.queryLocal(ctx, "", []string{localpart}, []string{userID}, map[string]string{localpart: userID},
		map[string][]string{}, resp, &mu); err != nil {
		return nil, err
	}
	out := &FederationDeviceList{UserID: userID, MasterKey: resp.MasterKeys[userID], SelfSigningKey: resp.SelfSigningKeys[userID]}
	keys := resp.DeviceKeys[userID]
	for _, d := range devs {
		fd := FederationDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName}
		if k, ok := keys[d.DeviceID]; ok {
			obj, err := parseObject(k, "device keys", 4*MaxKeyObjectBytes) // drops "unsigned"
			if err != nil {
				return nil, err
			}
			fd.Keys = obj.canon
		}
		out.Devices = append(out.Devices, fd)
	}
	slices.SortFunc(out.Devices, func(a, b FederationDevice) int { return cmp.Compare(a.DeviceID, b.DeviceID) })
	return out, nil
}

// RemoteDeviceListChanged records that the device list or cross-signing keys of users of other
// servers changed (an m.device_list_update or m.signing_key_update), for those who share a room
// with a local user, and wakes the syncs of everyone sharing a room with them. It reports whether
// anything was recorded.
func (s *Service) RemoteDeviceListChanged(ctx context.Context, userIDs ...string) (bool, error) {
	var sharing []string
	c := s.store.Read()
	for _, u := range userIDs {
		if id, err := spec.ParseUserID(u); err != nil || id.ServerName() == s.opts.ServerName {
			continue
		}
		others, err := c.UsersSharingRoomWith(ctx, u)
		if err != nil {
			return false, err
		}
		if slices.ContainsFunc(others, func(o string) bool { _, local := s.localUser(o); return local }) {
			sharing = append(sharing, u)
		}
	}
	if len(sharing) == 0 {
		return false, nil
	}
	err := s.store.Write(ctx, func(c storage.Conn) error {
		_, err := c.RecordDeviceListChange(ctx, sharing...)
		return err
	})
	if err != nil {
		return false, err
	}
	s.wakeSharing(sharing...)
	return true, nil
}

// receivedToDeviceLifetimeMS is how long the IDs of received m.direct_to_device EDUs are kept to
// recognise repeats.
const receivedToDeviceLifetimeMS = 24 * 60 * 60 * 1000

// ReceiveRemote delivers an m.direct_to_device EDU of origin: the messages (local user → device
// ID or "*" → content) from sender (a user of origin) go into the local devices' inboxes, once
// per (origin, messageID) however often the EDU arrives. Users of other servers, unknown users and
// devices, and contents that are not JSON objects are skipped; devices whose inbox is full miss
// the message (logged). It reports whether the EDU was new.
func (t *ToDevice) ReceiveRemote(ctx context.Context, origin, sender, eventType, messageID string,
	messages map[string]map[string]json.RawMessage) (bool, error) {
	from, err := spec.ParseUserID(sender)
	if err != nil || from.ServerName() != origin {
		return false, spec.ErrForbidden.Withf("sender %q is not a user of %s", clipID(sender, 64), origin)
	}
	if eventType == "" || len(eventType) > 255 || messageID == "" || len(messageID) > 255 {
		return false, spec.ErrInvalidParam.With("Invalid type or message_id")
	}
	local := map[string]map[string]json.RawMessage{}
	for userID, devices := range messages {
		lp, ok := t.localpart(userID)
		if !ok {
			continue
		}
		kept := map[string]json.RawMessage{}
		for device, content := range devices {
			if c := bytes.TrimSpace(content); device != "" && len(c) > 0 && c[0] == '{' {
				kept[device] = content
			}
		}
		if len(kept) > 0 {
			local[lp] = kept
		}
	}
	var recipients []string
	fresh := false
	now := t.Now().UnixMilli()
	err = t.store.Write(ctx, func(c storage.Conn) error {
		recipients = recipients[:0]
		var err error
		if fresh, err = c.InsertReceivedToDevice(ctx, origin, messageID, now); err != nil || !fresh {
			return err
		}
		if err := c.PurgeReceivedToDevice(ctx, now-receivedToDeviceLifetimeMS); err != nil {
			return err
		}
		recipients, err = t.deliver(ctx, c, sender, eventType, local)
		if errors.Is(err, ErrQueueFull) {
			return nil // recorded as received: a repeat would be refused the same way
		}
		return err
	})
	if err != nil {
		return false, err
	}
	if len(recipients) > 0 && t.waker != nil {
		t.waker.Wake(recipients...)
	}
	return fresh, nil
}
