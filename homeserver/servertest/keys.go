package servertest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// Key is an ed25519 key of a client: a device's identity key or a cross-signing key.
type Key struct {
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
	Base64  string // Public in unpadded base64, as key objects carry it
}

// NewKey makes a fresh Key.
func NewKey() Key {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return Key{Private: priv, Public: pub, Base64: base64.RawStdEncoding.EncodeToString(pub)}
}

// SignAs signs v (raw JSON, or a value to marshal) as userID with k under keyID.
func SignAs(t testing.TB, v any, userID, keyID string, k Key) json.RawMessage {
	t.Helper()
	raw, ok := v.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	signed, err := event.SignJSON(raw, userID, keyID, k.Private)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// Device is a logged-in device with its identity key.
type Device struct {
	User
	Key Key
}

// NewDevice gives u's device a fresh identity key.
func NewDevice(u User) Device { return Device{User: u, Key: NewKey()} }

// KeyID is the ID of the device's identity key, ed25519:<device ID>.
func (d Device) KeyID() string { return "ed25519:" + d.DeviceID }

// Sign signs v with the device's identity key.
func (d Device) Sign(t testing.TB, v any) json.RawMessage {
	return SignAs(t, v, d.UserID, d.KeyID(), d.Key)
}

// DeviceKeysObject is the device's device_keys object, unsigned (with a made-up curve25519 key).
func (d Device) DeviceKeysObject() map[string]any {
	return map[string]any{"user_id": d.UserID, "device_id": d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{d.KeyID(): d.Key.Base64, "curve25519:" + d.DeviceID: "curve+" + d.DeviceID}}
}

// DeviceKeys is the device's device_keys object, signed by the device.
func (d Device) DeviceKeys(t testing.TB) json.RawMessage { return d.Sign(t, d.DeviceKeysObject()) }
