package federation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// End-to-end encryption over federation (server-server API, "Device Management", "End-to-End
// Encryption"):
//
//   - served: POST /v1/user/keys/query, POST /v1/user/keys/claim and GET /v1/user/devices/{userId}
//     answer for our users from the e2ee service;
//   - asked: remoteKeys implements e2ee.RemoteKeys, so /keys/query and /keys/claim of clients reach
//     other servers' users (no cache: every query asks their server);
//   - device lists out: the announcer turns local users' changes on the device_lists stream into
//     m.device_list_update and m.signing_key_update EDUs for the servers sharing a room with them;
//   - device lists in: those EDUs record a change of the remote user on the device_lists stream,
//     so that local users sharing a room with them see them in device_lists.changed.
//
// The announcer (one goroutine per node; nodes take turns through a row lock):
//
//	key upload, login, rename, deletion ── commit (device_lists position P) ── bus wake-up
//	                                                                              │
//	announce: users changed in (cursor, P] ── their current lists vs what was last announced
//	          (device_list_announced_*) ── one EDU per device that differs or is gone, and one
//	          m.signing_key_update if the master/self-signing keys differ
//	    tx:   lock cursor (another node moved it? start again) ── record what is announced ──
//	          federation_edu_outbox rows ── cursor = P
//	    after commit: wake the destinations' queues
//
// stream_id counts a user's updates (1, 2, ...); each update's prev_id is the one before, and GET
// /user/devices answers the last one, so a server that caches our lists can tell a gap and resync.
// A wake-up that is lost (a crash after commit) is made up by the next one or by the periodic pass.

// e2eeFed holds the e2ee services and the announcer's goroutine.
type e2eeFed struct {
	keys     *e2ee.Service
	toDevice *e2ee.ToDevice
	kick     chan struct{}
	subs     []*nats.Subscription
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

// announcePeriod is how often the announcer looks for changes without being woken.
const announcePeriod = time.Minute

// startE2EE keeps the e2ee services and, when there is an outbound queue, starts the announcer
// (woken by device changes and key uploads on the bus). keys nil: the endpoints answer 404.
func (a *API) startE2EE(keys *e2ee.Service, toDevice *e2ee.ToDevice, b *bus.Bus) error {
	if keys == nil && toDevice == nil {
		return nil
	}
	f := &e2eeFed{keys: keys, toDevice: toDevice, kick: make(chan struct{}, 1)}
	a.e2e = f
	if keys == nil || a.sender == nil {
		return nil
	}
	poke := func() {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
	if b != nil {
		// Logins, renames and deletions of devices (account service).
		sub, err := b.Subscribe(bus.SubjectDeviceChange, func([]byte) { poke() })
		if err != nil {
			return err
		}
		f.subs = append(f.subs, sub)
		// Key uploads wake the syncs of everyone sharing a room with the user ("sharing").
		sub, err = b.Subscribe(bus.SubjectWake, func(data []byte) {
			var m struct {
				Sharing bool `json:"sharing"`
			}
			if json.Unmarshal(data, &m) == nil && m.Sharing {
				poke()
			}
		})
		if err != nil {
			f.unsubscribe()
			return err
		}
		f.subs = append(f.subs, sub)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	f.wg.Add(1)
	go a.announceLoop(ctx, f)
	poke() // what changed while the server was down
	return nil
}

func (f *e2eeFed) unsubscribe() {
	for _, s := range f.subs {
		_ = s.Unsubscribe()
	}
}

// stopE2EE stops the announcer.
func (a *API) stopE2EE() {
	if a.e2e == nil {
		return
	}
	a.e2e.unsubscribe()
	if a.e2e.stop != nil {
		a.e2e.stop()
		a.e2e.wg.Wait()
	}
}

func (a *API) announceLoop(ctx context.Context, f *e2eeFed) {
	defer f.wg.Done()
	t := time.NewTicker(announcePeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-t.C:
		}
		if err := a.announceDeviceLists(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("federation: announce device list changes", "err", err)
		}
	}
}

// deviceListUpdate is the content of m.device_list_update.
type deviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName *string         `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// signingKeyUpdate is the content of m.signing_key_update.
type signingKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// announcement is what one pass announces of one user.
type announcement struct {
	userID        string
	streamID      int64
	signingDigest string
	devices       map[string]string // announced now: device ID → digest
	deleted       []string
	edus          []eduJSON
	destinations  []string
}

// maxAnnounceRounds bounds the passes that lose the race for the cursor to another node.
const maxAnnounceRounds = 5

// announceDeviceLists announces the local users' device list changes not announced yet.
func (a *API) announceDeviceLists(ctx context.Context) error {
	for range maxAnnounceRounds {
		done, err := a.announceOnce(ctx)
		if err != nil || done {
			return err
		}
	}
	return nil
}

// announceOnce is one pass; done is false when another node moved the cursor meanwhile.
func (a *API) announceOnce(ctx context.Context) (done bool, err error) {
	c := a.store.Read()
	pos, err := c.Positions(ctx, storage.StreamFederationDeviceLists, storage.StreamDeviceLists)
	if err != nil {
		return false, err
	}
	cursor, upto := pos[storage.StreamFederationDeviceLists], pos[storage.StreamDeviceLists]
	if upto <= cursor {
		return true, nil
	}
	changed, err := c.DeviceListChanges(ctx, cursor, upto)
	if err != nil {
		return false, err
	}
	local := slices.DeleteFunc(changed, func(u string) bool { return serverName(u) != a.serverName })
	announced, err := c.AnnouncedDeviceLists(ctx, local)
	if err != nil {
		return false, err
	}
	var plans []announcement
	for _, u := range local {
		p, err := a.planAnnouncement(ctx, u, announced[u])
		if err != nil {
			return false, err
		}
		if p != nil {
			plans = append(plans, *p)
		}
	}

	raced := false
	wake := map[string]bool{}
	now := time.Now().UnixMilli()
	err = a.store.Write(ctx, func(c storage.Conn) error {
		raced = false
		clear(wake)
		locked, err := c.LockPosition(ctx, storage.StreamFederationDeviceLists)
		if err != nil {
			return err
		}
		if locked != cursor {
			raced = true
			return nil
		}
		var rows []storage.OutboxEDU
		n := 0
		for _, p := range plans {
			n += len(p.edus)
		}
		var id int64
		if n > 0 {
			if id, err = c.LockPosition(ctx, storage.StreamFederationEDU); err != nil {
				return err
			}
		}
		for _, p := range plans {
			if err := c.PutAnnouncedDeviceList(ctx, p.userID, p.streamID, p.signingDigest, p.devices, p.deleted); err != nil {
				return err
			}
			for _, e := range p.edus {
				id++
				for _, d := range p.destinations {
					rows = append(rows, storage.OutboxEDU{Destination: d, ID: id, Type: e.Type, Content: e.Content, QueuedTS: now})
					wake[d] = true
				}
			}
		}
		if n > 0 {
			if err := c.SetPosition(ctx, storage.StreamFederationEDU, id); err != nil {
				return err
			}
		}
		if err := c.InsertOutboxEDUs(ctx, rows); err != nil {
			return err
		}
		return c.SetPosition(ctx, storage.StreamFederationDeviceLists, upto)
	})
	if err != nil || raced {
		return false, err
	}
	if len(wake) > 0 {
		a.sender.wake(slices.Sorted(maps.Keys(wake)))
	}
	return true, nil
}

// planAnnouncement compares a local user's current device list with what was last announced and
// returns the EDUs that bring other servers up to date (nil when nothing differs).
func (a *API) planAnnouncement(ctx context.Context, userID string, prev *storage.AnnouncedDeviceList) (*announcement, error) {
	list, err := a.e2e.keys.FederationDeviceList(ctx, userID)
	if err != nil {
		return nil, err
	}
	p := &announcement{userID: userID, streamID: prev.StreamID, devices: map[string]string{},
		signingDigest: digest(list.MasterKey, list.SelfSigningKey)}
	next := func(u deviceListUpdate) {
		u.UserID, u.PrevID = userID, []int64{}
		if p.streamID > 0 {
			u.PrevID = []int64{p.streamID}
		}
		p.streamID++
		u.StreamID = p.streamID
		p.edus = append(p.edus, eduJSON{Type: "m.device_list_update", Content: mustJSON(u)})
	}
	// The cross-signing keys first: device updates that follow may carry signatures by them.
	if p.signingDigest != prev.SigningDigest && (list.MasterKey != nil || list.SelfSigningKey != nil) {
		p.edus = append(p.edus, eduJSON{Type: "m.signing_key_update", Content: mustJSON(signingKeyUpdate{UserID: userID,
			MasterKey: list.MasterKey, SelfSigningKey: list.SelfSigningKey})})
	}
	// Other servers see the devices that have identity keys (as GET /user/devices lists them): a
	// login shows once its keys are uploaded, and a device that loses its keys is gone.
	current := map[string]bool{}
	for _, d := range list.Devices {
		if d.Keys == nil {
			continue
		}
		current[d.DeviceID] = true
		var name []byte
		if d.DisplayName != nil {
			name = mustJSON(*d.DisplayName)
		}
		dg := digest(name, d.Keys)
		if prev.Devices[d.DeviceID] == dg {
			continue
		}
		p.devices[d.DeviceID] = dg
		next(deviceListUpdate{DeviceID: d.DeviceID, DisplayName: d.DisplayName, Keys: d.Keys})
	}
	for _, id := range slices.Sorted(maps.Keys(prev.Devices)) {
		if !current[id] {
			p.deleted = append(p.deleted, id)
			next(deviceListUpdate{DeviceID: id, Deleted: true})
		}
	}
	if len(p.edus) == 0 && p.signingDigest == prev.SigningDigest {
		return nil, nil
	}
	sharing, err := a.store.Read().UsersSharingRoomWith(ctx, userID)
	if err != nil {
		return nil, err
	}
	servers := map[string]bool{}
	for _, u := range sharing {
		if s := serverName(u); s != "" && s != a.serverName {
			servers[s] = true
		}
	}
	p.destinations = slices.Sorted(maps.Keys(servers))
	return p, nil
}

// digest identifies announced content: a hex SHA-256 of the parts, each length-prefixed.
func digest(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("federation: encode %T: %v", v, err)) // only plain structs and strings come here
	}
	return b
}

// userOfOrigin checks that a user ID of an EDU is valid and of the origin server.
func userOfOrigin(userID, origin string) error {
	u, err := spec.ParseUserID(userID)
	if err != nil {
		return fmt.Errorf("invalid user ID %q", userID)
	}
	if u.ServerName() != origin {
		return fmt.Errorf("user %s is not of the origin %s", userID, origin)
	}
	return nil
}

// receiveDeviceListUpdate handles m.device_list_update and m.signing_key_update: the user (of the
// origin) changed devices or cross-signing keys. With no cache of remote lists, recording the
// change is all there is to do: local users sharing a room with them query again.
func (a *API) receiveDeviceListUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	if a.e2e == nil || a.e2e.keys == nil {
		return nil
	}
	var c struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return fmt.Errorf("malformed device list update: %w", err)
	}
	if err := userOfOrigin(c.UserID, origin); err != nil {
		return err
	}
	_, err := a.e2e.keys.RemoteDeviceListChanged(ctx, c.UserID)
	return err
}

// errNoE2EE answers the endpoints when the server has no e2ee service.
var errNoE2EE = spec.ErrUnrecognized.With("End-to-end encryption is not served")

// localUsersOnly keeps the users of this server among keys of m; a malformed user ID is
// M_INVALID_PARAM. Other servers' users are left out: the spec requires them to be ours, and
// asking their servers on another server's behalf is not our job.
func localUsersOnly[V any](serverName string, m map[string]V) (map[string]V, error) {
	out := make(map[string]V, len(m))
	for user, v := range m {
		u, err := spec.ParseUserID(user)
		if err != nil {
			return nil, spec.ErrInvalidParam.Withf("Invalid user ID %q", user)
		}
		if u.ServerName() == serverName {
			out[user] = v
		}
	}
	return out, nil
}

// userKeysQuery is POST /_matrix/federation/v1/user/keys/query: device and cross-signing keys of
// our users, with the signatures their owners made.
func (a *API) userKeysQuery(r *http.Request) (any, error) {
	if a.e2e == nil || a.e2e.keys == nil {
		return nil, errNoE2EE
	}
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		return nil, spec.ErrBadJSON.With("Expected {device_keys: {user ID: [device ID, ...]}}")
	}
	if body.DeviceKeys == nil {
		return nil, spec.ErrMissingParam.With("device_keys is required")
	}
	want, err := localUsersOnly(a.serverName, body.DeviceKeys)
	if err != nil {
		return nil, err
	}
	resp, err := a.e2e.keys.QueryKeys(r.Context(), "", want, 0)
	if err != nil {
		return nil, err
	}
	return e2ee.RemoteQuery{DeviceKeys: resp.DeviceKeys, MasterKeys: resp.MasterKeys, SelfSigningKeys: resp.SelfSigningKeys}, nil
}

// userKeysClaim is POST /_matrix/federation/v1/user/keys/claim: one-time keys (or fallback keys)
// of our users' devices, each one-time key handed out once.
func (a *API) userKeysClaim(r *http.Request) (any, error) {
	if a.e2e == nil || a.e2e.keys == nil {
		return nil, errNoE2EE
	}
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		return nil, spec.ErrBadJSON.With("Expected {one_time_keys: {user ID: {device ID: algorithm}}}")
	}
	if body.OneTimeKeys == nil {
		return nil, spec.ErrMissingParam.With("one_time_keys is required")
	}
	want, err := localUsersOnly(a.serverName, body.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	resp, err := a.e2e.keys.ClaimKeys(r.Context(), want, 0)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": resp.OneTimeKeys}, nil
}

// userDevice is one device of GET /user/devices.
type userDevice struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys"`
	DisplayName *string         `json:"device_display_name,omitempty"`
}

// userDevices is GET /_matrix/federation/v1/user/devices/{userId}: the devices of one of our
// users that have identity keys (with their display names, which the spec makes public), the
// stream_id of the last m.device_list_update sent for the user, and the master and self-signing
// keys. A user of another server is M_INVALID_PARAM, an unknown one M_NOT_FOUND.
func (a *API) userDevices(r *http.Request) (any, error) {
	if a.e2e == nil || a.e2e.keys == nil {
		return nil, errNoE2EE
	}
	ctx := r.Context()
	userID := chi.URLParam(r, "userId")
	u, err := spec.ParseUserID(userID)
	if err != nil {
		return nil, spec.ErrInvalidParam.Withf("Invalid user ID %q", userID)
	}
	if u.ServerName() != a.serverName {
		return nil, spec.ErrInvalidParam.With("The user is not on this server")
	}
	c := a.store.Read()
	if _, err := c.Account(ctx, u.Localpart()); errors.Is(err, storage.ErrNotFound) {
		return nil, spec.ErrNotFound.With("Unknown user")
	} else if err != nil {
		return nil, err
	}
	// The stream ID first: a change announced between the two reads shows in the list, and its
	// EDU, relative to this ID, then changes nothing.
	streamID, err := c.AnnouncedStreamID(ctx, userID)
	if err != nil {
		return nil, err
	}
	list, err := a.e2e.keys.FederationDeviceList(ctx, userID)
	if err != nil {
		return nil, err
	}
	devices := []userDevice{}
	for _, d := range list.Devices {
		if d.Keys != nil {
			devices = append(devices, userDevice{DeviceID: d.DeviceID, Keys: d.Keys, DisplayName: d.DisplayName})
		}
	}
	resp := map[string]any{"user_id": userID, "stream_id": streamID, "devices": devices}
	if list.MasterKey != nil {
		resp["master_key"] = list.MasterKey
	}
	if list.SelfSigningKey != nil {
		resp["self_signing_key"] = list.SelfSigningKey
	}
	return resp, nil
}

// RemoteKeys is how the e2ee service asks other servers for their users' keys.
func (a *API) RemoteKeys() e2ee.RemoteKeys { return remoteKeys{a} }

type remoteKeys struct{ a *API }

// QueryKeys is POST /_matrix/federation/v1/user/keys/query on serverName.
func (k remoteKeys) QueryKeys(ctx context.Context, serverName string, deviceKeys map[string][]string) (e2ee.RemoteQuery, error) {
	var out e2ee.RemoteQuery
	err := k.a.client.DoJSON(ctx, serverName, "POST", "/_matrix/federation/v1/user/keys/query",
		map[string]any{"device_keys": deviceKeys}, &out)
	return out, err
}

// ClaimKeys is POST /_matrix/federation/v1/user/keys/claim on serverName.
func (k remoteKeys) ClaimKeys(ctx context.Context, serverName string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var out struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	err := k.a.client.DoJSON(ctx, serverName, "POST", "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": oneTimeKeys}, &out)
	return out.OneTimeKeys, err
}
