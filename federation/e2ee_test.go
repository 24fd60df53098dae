package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// End-to-end encryption across two servers: alice@hs1 and bob@hs2 share a room.

// e2eDevice is a logged-in device with its identity key, and what it uploads.
type e2eDevice struct{ servertest.Device }

func newE2EDevice(u servertest.User) e2eDevice { return e2eDevice{servertest.NewDevice(u)} }

// uploadKeys uploads the device's identity keys, two one-time keys and a fallback key.
func (d e2eDevice) uploadKeys(t testing.TB, hs *servertest.Server) {
	t.Helper()
	otks := map[string]json.RawMessage{}
	for i := range 2 {
		otks[fmt.Sprintf("signed_curve25519:otk%d", i)] = d.Sign(t, map[string]any{"key": fmt.Sprintf("otk+%s+%d", d.DeviceID, i)})
	}
	res := hs.Do(t, "POST", "/_matrix/client/v3/keys/upload", d.AccessToken, map[string]any{
		"device_keys": d.DeviceKeys(t), "one_time_keys": otks,
		"fallback_keys": map[string]json.RawMessage{"signed_curve25519:fb": d.Sign(t, map[string]any{"key": "fb+" + d.DeviceID, "fallback": true})}})
	if res.Status != 200 {
		t.Fatalf("keys/upload of %s: %d %s", d.DeviceID, res.Status, res.Raw)
	}
}

// uploadCrossSigning uploads master, self-signing and user-signing keys; it returns the master key.
func (d e2eDevice) uploadCrossSigning(t testing.TB, hs *servertest.Server) servertest.Key {
	t.Helper()
	master, self, user := servertest.NewKey(), servertest.NewKey(), servertest.NewKey()
	obj := func(usage string, k servertest.Key) map[string]any {
		return map[string]any{"user_id": d.UserID, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + k.Base64: k.Base64}}
	}
	res := hs.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", d.AccessToken, map[string]any{
		"master_key":       obj("master", master),
		"self_signing_key": servertest.SignAs(t, obj("self_signing", self), d.UserID, "ed25519:"+master.Base64, master),
		"user_signing_key": servertest.SignAs(t, obj("user_signing", user), d.UserID, "ed25519:"+master.Base64, master),
	})
	if res.Status != 200 {
		t.Fatalf("device_signing/upload: %d %s", res.Status, res.Raw)
	}
	return master
}

// e2eSync is a /sync follower that keeps the to-device messages and device_lists.changed.
type e2eSync struct {
	hs       *servertest.Server
	user     servertest.User
	next     string
	toDevice []toDeviceEvent
	changed  []string // every device_lists.changed entry, in order
}

type toDeviceEvent struct {
	Sender  string         `json:"sender"`
	Type    string         `json:"type"`
	Content map[string]any `json:"content"`
}

func newE2ESync(t testing.TB, hs *servertest.Server, u servertest.User) *e2eSync {
	s := &e2eSync{hs: hs, user: u}
	s.once(t, 0)
	s.toDevice, s.changed = nil, nil
	return s
}

func (s *e2eSync) once(t testing.TB, timeoutMS int) {
	t.Helper()
	var body struct {
		NextBatch string `json:"next_batch"`
		ToDevice  struct {
			Events []toDeviceEvent `json:"events"`
		} `json:"to_device"`
		DeviceLists struct {
			Changed []string `json:"changed"`
		} `json:"device_lists"`
	}
	syncOnce(t, s.hs, s.user, s.next, "", timeoutMS, &body)
	s.next = body.NextBatch
	s.toDevice = append(s.toDevice, body.ToDevice.Events...)
	s.changed = append(s.changed, body.DeviceLists.Changed...)
}

// waitChanged syncs until user appears in device_lists.changed (counting from the last reset).
func (s *e2eSync) waitChanged(t testing.TB, user, why string) {
	t.Helper()
	syncUntil(t, fmt.Sprintf("%s: %s in device_lists.changed (%s)", s.user.UserID, user, why),
		func() bool { return slices.Contains(s.changed, user) }, func() { s.once(t, 500) },
		func() string { return fmt.Sprintf("got %v", s.changed) })
	s.changed = nil
}

// waitToDevice syncs until a to-device message with this body arrived.
func (s *e2eSync) waitToDevice(t testing.TB, body string) {
	t.Helper()
	syncUntil(t, fmt.Sprintf("%s: the to-device message %q", s.user.UserID, body),
		func() bool { return slices.Contains(s.bodies(), body) }, func() { s.once(t, 500) },
		func() string { return fmt.Sprintf("got %v", s.bodies()) })
}

func (s *e2eSync) bodies() []string {
	var out []string
	for _, e := range s.toDevice {
		out = append(out, fmt.Sprint(e.Content["body"]))
	}
	return out
}

func keysQueryOf(t testing.TB, hs *servertest.Server, u servertest.User, users ...string) map[string]json.RawMessage {
	t.Helper()
	want := map[string][]string{}
	for _, id := range users {
		want[id] = []string{}
	}
	res := hs.Do(t, "POST", "/_matrix/client/v3/keys/query", u.AccessToken, map[string]any{"device_keys": want})
	if res.Status != 200 {
		t.Fatalf("keys/query: %d %s", res.Status, res.Raw)
	}
	var out map[string]json.RawMessage
	_ = json.Unmarshal(res.Raw, &out)
	return out
}

func TestE2EEOverFederation(t *testing.T) {
	forEachBackend(t, testE2EEOverFederation)
}

func testE2EEOverFederation(t *testing.T, backend string) {
	ctx := context.Background()
	sr := newSharedRoom(t, backend, "")
	hs3 := servertest.Start(t, backend, servertest.Federated(t, sr.ca, ip3), fastRetry)
	aliceSync := newE2ESync(t, sr.hs1, sr.alice)
	bobSync := newE2ESync(t, sr.hs2, sr.bob)
	alice := newE2EDevice(sr.alice)
	bob := newE2EDevice(sr.bob)

	// Forged EDUs from hs3 about bob (a user of hs2) are ignored; bob's server's own reach alice
	// once, however often they are sent.
	sendEDUs(t, hs3, sr.hs1, "forged-1",
		map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": bob.UserID, "device_id": "X", "stream_id": 1}},
		map[string]any{"edu_type": "m.signing_key_update", "content": map[string]any{"user_id": bob.UserID}},
		map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": bob.UserID, "type": "m.test",
			"message_id": "forged", "messages": map[string]any{alice.UserID: map[string]any{"*": map[string]any{"body": "forged"}}}}})
	marker := map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": bob.UserID, "type": "m.test",
		"message_id": "marker-1", "messages": map[string]any{alice.UserID: map[string]any{"*": map[string]any{"body": "marker"}}}}}
	sendEDUs(t, sr.hs2, sr.hs1, "marker-a", marker)
	sendEDUs(t, sr.hs2, sr.hs1, "marker-a", marker) // the same transaction again
	sendEDUs(t, sr.hs2, sr.hs1, "marker-b", marker) // the same EDU in another transaction
	aliceSync.waitToDevice(t, "marker")
	aliceSync.once(t, 0)
	if got := aliceSync.bodies(); !slices.Equal(got, []string{"marker"}) {
		t.Fatalf("alice's to-device messages = %v, want [marker] once and nothing forged", got)
	}
	if e := aliceSync.toDevice[0]; e.Sender != bob.UserID || e.Type != "m.test" {
		t.Errorf("to-device event = %+v", e)
	}
	if slices.Contains(aliceSync.changed, bob.UserID) {
		t.Fatalf("a forged device list update made bob appear in device_lists.changed")
	}
	aliceSync.toDevice = nil

	// bob uploads keys on hs2: alice's sync on hs1 tells her, and her queries reach hs2.
	bob.uploadKeys(t, sr.hs2)
	aliceSync.waitChanged(t, bob.UserID, "bob uploaded device keys")
	bobMaster := bob.uploadCrossSigning(t, sr.hs2)
	aliceSync.waitChanged(t, bob.UserID, "bob uploaded cross-signing keys")

	q := keysQueryOf(t, sr.hs1, alice.User, bob.UserID)
	var answer struct {
		Failures        map[string]any                              `json:"failures"`
		DeviceKeys      map[string]map[string]json.RawMessage       `json:"device_keys"`
		MasterKeys      map[string]struct{ Keys map[string]string } `json:"master_keys"`
		SelfSigningKeys map[string]json.RawMessage                  `json:"self_signing_keys"`
		UserSigningKeys map[string]json.RawMessage                  `json:"user_signing_keys"`
	}
	raw, _ := json.Marshal(q)
	if err := json.Unmarshal(raw, &answer); err != nil {
		t.Fatal(err)
	}
	if len(answer.Failures) != 0 {
		t.Fatalf("keys/query failures: %v", answer.Failures)
	}
	devKeys := answer.DeviceKeys[bob.UserID][bob.DeviceID]
	if devKeys == nil {
		t.Fatalf("keys/query: no device keys of bob's device: %s", raw)
	}
	if err := event.VerifyJSON(devKeys, bob.UserID, bob.KeyID(), bob.Key.Public); err != nil {
		t.Errorf("bob's device keys as hs1 serves them do not verify: %v (%s)", err, devKeys)
	}
	if answer.MasterKeys[bob.UserID].Keys["ed25519:"+bobMaster.Base64] != bobMaster.Base64 {
		t.Errorf("bob's master key = %+v", answer.MasterKeys[bob.UserID])
	}
	if answer.SelfSigningKeys[bob.UserID] == nil || answer.UserSigningKeys[bob.UserID] != nil {
		t.Errorf("self-signing %s, user-signing %s: want bob's self-signing key and not his user-signing key",
			answer.SelfSigningKeys[bob.UserID], answer.UserSigningKeys[bob.UserID])
	}

	// Claims: two one-time keys, each once, then the fallback key.
	var claimed []string
	for i := range 3 {
		res := sr.hs1.Do(t, "POST", "/_matrix/client/v3/keys/claim", alice.AccessToken,
			map[string]any{"one_time_keys": map[string]any{bob.UserID: map[string]string{bob.DeviceID: "signed_curve25519"}}})
		var c struct {
			Failures    map[string]any                                   `json:"failures"`
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		if res.Status != 200 || json.Unmarshal(res.Raw, &c) != nil || len(c.Failures) != 0 {
			t.Fatalf("claim %d: %d %s", i, res.Status, res.Raw)
		}
		keys := c.OneTimeKeys[bob.UserID][bob.DeviceID]
		if len(keys) != 1 {
			t.Fatalf("claim %d: want one key of bob's device: %s", i, res.Raw)
		}
		for id, k := range keys {
			if err := event.VerifyJSON(k, bob.UserID, bob.KeyID(), bob.Key.Public); err != nil {
				t.Errorf("claim %d: key %s not signed by bob's device: %v", i, id, err)
			}
			claimed = append(claimed, id)
		}
	}
	if claimed[0] == claimed[1] || !strings.HasPrefix(claimed[0], "signed_curve25519:otk") ||
		!strings.HasPrefix(claimed[1], "signed_curve25519:otk") || claimed[2] != "signed_curve25519:fb" {
		t.Fatalf("claimed %v: want two different one-time keys, then the fallback key", claimed)
	}

	// A to-device message from alice to bob's device arrives once.
	res := sr.hs1.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/txn1", alice.AccessToken,
		map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"body": "hello bob"}}}})
	if res.Status != 200 {
		t.Fatalf("sendToDevice: %d %s", res.Status, res.Raw)
	}
	bobSync.waitToDevice(t, "hello bob")
	bobSync.once(t, 300)
	if got := bobSync.bodies(); !slices.Equal(got, []string{"hello bob"}) {
		t.Fatalf("bob's to-device messages = %v, want [hello bob] once", got)
	}
	if e := bobSync.toDevice[0]; e.Sender != alice.UserID || e.Type != "m.room_key_request" {
		t.Errorf("to-device event = %+v", e)
	}

	// A new login of bob, with keys: alice is told, and sees both devices.
	bob2 := newE2EDevice(sr.hs2.Login(t, "bob", bob.Password))
	bob2.uploadKeys(t, sr.hs2)
	aliceSync.waitChanged(t, bob.UserID, "bob logged in a new device")
	if got := keysQueryOf(t, sr.hs1, alice.User, bob.UserID)["device_keys"]; !strings.Contains(string(got), bob2.DeviceID) ||
		!strings.Contains(string(got), bob.DeviceID) {
		t.Fatalf("alice's query after bob's second login: %s", got)
	}

	// GET /user/devices: bob's devices with keys, the last stream_id, his cross-signing keys.
	var devices struct {
		UserID   string `json:"user_id"`
		StreamID int64  `json:"stream_id"`
		Devices  []struct {
			DeviceID string          `json:"device_id"`
			Keys     json.RawMessage `json:"keys"`
		} `json:"devices"`
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
	}
	path := "/_matrix/federation/v1/user/devices/" + url.PathEscape(bob.UserID)
	if err := sr.hs1.Federation.Client().DoJSON(ctx, sr.name2, "GET", path, nil, &devices); err != nil {
		t.Fatalf("GET /user/devices: %v", err)
	}
	// Two updates were sent for bob: his first device's keys, then his second's.
	if devices.UserID != bob.UserID || len(devices.Devices) != 2 || devices.StreamID < 2 || devices.MasterKey == nil || devices.SelfSigningKey == nil {
		raw, _ := json.Marshal(devices)
		t.Fatalf("GET /user/devices = %s", raw)
	}
	for _, d := range devices.Devices {
		if err := event.VerifyJSON(d.Keys, bob.UserID, "ed25519:"+d.DeviceID, map[string]ed25519.PublicKey{
			bob.DeviceID: bob.Key.Public, bob2.DeviceID: bob2.Key.Public}[d.DeviceID]); err != nil {
			t.Errorf("device %s keys: %v", d.DeviceID, err)
		}
	}
	// Only our users, and only existing ones.
	for _, c := range []struct{ user, code string }{{alice.UserID, "M_INVALID_PARAM"}, {"@nobody:" + sr.name2, "M_NOT_FOUND"}} {
		err := sr.hs1.Federation.Client().DoJSON(ctx, sr.name2, "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(c.user), nil, &devices)
		if fe, ok := err.(*fedclient.Error); !ok || fe.Code != c.code {
			t.Errorf("GET /user/devices/%s: %v, want %s", c.user, err, c.code)
		}
	}

	// bob logs the second device out: alice is told, and it is gone from her query.
	if res := sr.hs2.Do(t, "POST", "/_matrix/client/v3/logout", bob2.AccessToken, map[string]any{}); res.Status != 200 {
		t.Fatalf("logout: %d %s", res.Status, res.Raw)
	}
	aliceSync.waitChanged(t, bob.UserID, "bob deleted a device")
	if got := keysQueryOf(t, sr.hs1, alice.User, bob.UserID)["device_keys"]; strings.Contains(string(got), bob2.DeviceID) {
		t.Fatalf("alice's query after bob's logout still has the device: %s", got)
	}

	// A user of hs2 who starts sharing the room appears in alice's device_lists.changed.
	carol := sr.hs2.Register(t, "carol", "carol-password-1")
	join := sr.hs2.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(sr.roomID)+"?via="+url.QueryEscape(sr.name1), carol.AccessToken, map[string]any{})
	if join.Status != 200 {
		t.Fatalf("carol joins: %d %s", join.Status, join.Raw)
	}
	aliceSync.waitChanged(t, carol.UserID, "carol joined alice's room")

	// bob's server down: his server is in failures, the request still answers.
	sr.hs2.Stop()
	res = sr.hs1.Do(t, "POST", "/_matrix/client/v3/keys/query", alice.AccessToken,
		map[string]any{"device_keys": map[string][]string{bob.UserID: {}, alice.UserID: {}}, "timeout": 3000})
	var down struct {
		Failures   map[string]json.RawMessage            `json:"failures"`
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
	}
	if res.Status != 200 || json.Unmarshal(res.Raw, &down) != nil || down.Failures[sr.name2] == nil || down.DeviceKeys[bob.UserID] != nil {
		t.Fatalf("keys/query with hs2 down: %d %s", res.Status, res.Raw)
	}
}

// The EDUs bob's server sends about him: one m.device_list_update per change, numbered in a chain
// (stream_id, prev_id), with the keys, display names and deletions; m.signing_key_update with
// his cross-signing keys.
func TestDeviceListUpdatesSent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ca := servertest.NewCA(t)
		hs1 := servertest.Start(t, backend, servertest.Federated(t, ca, ip1), fastRetry)
		hs2 := servertest.Start(t, backend, servertest.Federated(t, ca, ip2), fastRetry)
		type edu struct {
			typ     string
			content map[string]json.RawMessage
		}
		got := make(chan edu, 100)
		capture := func(typ string) func(context.Context, string, json.RawMessage) error {
			return func(_ context.Context, origin string, content json.RawMessage) error {
				var c map[string]json.RawMessage
				if origin == hs2.Config.ServerName && json.Unmarshal(content, &c) == nil {
					got <- edu{typ, c}
				}
				return nil
			}
		}
		hs1.Federation.SetEDUHandler("m.device_list_update", capture("m.device_list_update"))
		hs1.Federation.SetEDUHandler("m.signing_key_update", capture("m.signing_key_update"))
		alice := hs1.Register(t, "alice", "alice-password-1")
		bobUser := hs2.Register(t, "bob", "bob-password-12")
		bob := newE2EDevice(bobUser)
		joinVia(t, hs2, bob.User, createRoom(t, hs1, alice, map[string]any{"preset": "public_chat"}), hs1.Config.ServerName)
		next := func(what string) edu {
			t.Helper()
			select {
			case e := <-got:
				return e
			case <-time.After(20 * time.Second):
				t.Fatalf("no EDU for %s", what)
			}
			return edu{}
		}
		field := func(e edu, name string, v any) {
			t.Helper()
			if err := json.Unmarshal(e.content[name], v); err != nil {
				t.Fatalf("%s.%s: %v (%s)", e.typ, name, err, e.content[name])
			}
		}
		var lastID int64
		// checkUpdate reads the next m.device_list_update and checks its user, device and chain.
		checkUpdate := func(what, deviceID string) edu {
			t.Helper()
			e := next(what)
			var user, device string
			var streamID int64
			var prev []int64
			field(e, "user_id", &user)
			field(e, "device_id", &device)
			field(e, "stream_id", &streamID)
			field(e, "prev_id", &prev)
			if e.typ != "m.device_list_update" || user != bob.UserID || device != deviceID {
				t.Fatalf("%s: got %s %v", what, e.typ, e.content)
			}
			if streamID <= lastID || (lastID > 0 && !slices.Equal(prev, []int64{lastID})) {
				t.Fatalf("%s: stream_id %d, prev_id %v after stream_id %d", what, streamID, prev, lastID)
			}
			lastID = streamID
			return e
		}

		bob.uploadKeys(t, hs2)
		e := checkUpdate("a key upload", bob.DeviceID)
		var keys json.RawMessage
		field(e, "keys", &keys)
		if err := event.VerifyJSON(keys, bob.UserID, bob.KeyID(), bob.Key.Public); err != nil {
			t.Fatalf("keys of the update: %v (%s)", err, keys)
		}

		if res := hs2.Do(t, "PUT", "/_matrix/client/v3/devices/"+url.PathEscape(bob.DeviceID), bob.AccessToken,
			map[string]any{"display_name": "Bob's phone"}); res.Status != 200 {
			t.Fatalf("rename: %d %s", res.Status, res.Raw)
		}
		var name string
		field(checkUpdate("a rename", bob.DeviceID), "device_display_name", &name)
		if name != "Bob's phone" {
			t.Fatalf("device_display_name = %q", name)
		}

		master := bob.uploadCrossSigning(t, hs2)
		e = next("cross-signing keys")
		var masterKey struct {
			Keys map[string]string `json:"keys"`
		}
		field(e, "master_key", &masterKey)
		if e.typ != "m.signing_key_update" || masterKey.Keys["ed25519:"+master.Base64] != master.Base64 || e.content["self_signing_key"] == nil {
			t.Fatalf("after the cross-signing upload: %s %v", e.typ, e.content)
		}

		// A login without keys is not announced; its keys are.
		bob2 := newE2EDevice(hs2.Login(t, "bob", bob.Password))
		bob2.uploadKeys(t, hs2)
		checkUpdate("a new login's keys", bob2.DeviceID)
		if res := hs2.Do(t, "POST", "/_matrix/client/v3/logout", bob2.AccessToken, map[string]any{}); res.Status != 200 {
			t.Fatalf("logout: %d %s", res.Status, res.Raw)
		}
		var deleted bool
		field(checkUpdate("a logout", bob2.DeviceID), "deleted", &deleted)
		if !deleted {
			t.Fatal("the update after a logout does not say deleted")
		}
		select {
		case e := <-got:
			t.Fatalf("unexpected EDU %s %v", e.typ, e.content)
		case <-time.After(300 * time.Millisecond):
		}
	})
}
