package e2ee

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// UploadRequest is the body of POST /keys/upload; absent members are nil.
type UploadRequest struct {
	DeviceKeys   json.RawMessage
	OneTimeKeys  map[string]json.RawMessage
	FallbackKeys map[string]json.RawMessage
}

// uploadKey is a validated one-time or fallback key.
type uploadKey struct {
	storage.OneTimeKey
	obj *object // nil for a plain string key
}

// UploadKeys stores the keys of the caller's device and returns its unclaimed one-time key counts
// per algorithm. Everything is validated before anything is stored, and stored in one transaction:
//   - device_keys must name the caller's user and device, carry ed25519:<device_id> and be signed
//     by it. Uploading the same keys again is accepted (new signatures are stored); different
//     identity keys for a device that has keys are refused (M_INVALID_PARAM): a device keeps its
//     identity for life, a new identity is a new device.
//   - one-time and fallback keys are "<algorithm>:<key_id>" → string or object; signed_* keys must
//     be objects signed by the device's ed25519 key when the device keys are known. A one-time key
//     ID uploaded again with other content is refused (M_INVALID_PARAM).
//   - a fallback key replaces the device's previous one of its algorithm, as unused.
//   - limits: MaxOneTimeKeysPerUpload, MaxFallbackKeysPerUpload, the per-device cap of stored
//     one-time keys, MaxKeyObjectBytes and MaxOneTimeKeyBytes (M_TOO_LARGE).
func (s *Service) UploadKeys(ctx context.Context, userID, deviceID string, req UploadRequest) (map[string]int, error) {
	localpart, ok := s.localUser(userID)
	if !ok {
		return nil, spec.ErrForbidden.With("Keys can only be uploaded by users of this server")
	}
	var dk *object
	var dkPub string
	if len(req.DeviceKeys) > 0 && !bytes.Equal(bytes.TrimSpace(req.DeviceKeys), []byte("null")) {
		o, pub, err := parseDeviceKeys(req.DeviceKeys, userID, deviceID)
		if err != nil {
			return nil, err
		}
		dk, dkPub = &o, pub
	}
	if len(req.OneTimeKeys) > MaxOneTimeKeysPerUpload {
		return nil, spec.ErrTooLarge.Withf("At most %d one-time keys may be uploaded at once", MaxOneTimeKeysPerUpload)
	}
	if len(req.FallbackKeys) > MaxFallbackKeysPerUpload {
		return nil, spec.ErrTooLarge.Withf("At most %d fallback keys may be uploaded at once", MaxFallbackKeysPerUpload)
	}
	otks, err := parseUploadKeys(req.OneTimeKeys, "one_time_keys")
	if err != nil {
		return nil, err
	}
	fbs, err := parseUploadKeys(req.FallbackKeys, "fallback_keys")
	if err != nil {
		return nil, err
	}
	for i := 1; i < len(fbs); i++ {
		if fbs[i].Algorithm == fbs[i-1].Algorithm {
			return nil, spec.ErrInvalidParam.Withf("fallback_keys: more than one key for algorithm %s", fbs[i].Algorithm)
		}
	}

	var counts map[string]int
	var changed bool
	now := s.Now().UnixMilli()
	err = s.store.Write(ctx, func(c storage.Conn) error {
		changed = false
		if dk != nil {
			// Device-key writers queue on the device_lists counter (see storage.Conn.DeleteDeviceKeys),
			// so two first uploads of different keys for one device cannot both succeed.
			if _, err := c.LockPosition(ctx, storage.StreamDeviceLists); err != nil {
				return err
			}
		}
		if _, err := c.Device(ctx, localpart, deviceID); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return spec.ErrNotFound.With("Unknown device")
			}
			return err
		}
		pub := ""
		stored, err := c.DeviceKeysJSON(ctx, localpart, deviceID)
		switch {
		case err == nil:
			o, perr := parseObject(stored, "stored device keys", 1<<30)
			if perr != nil {
				return perr
			}
			keys, _ := o.stringMap("keys")
			pub = keys["ed25519:"+deviceID]
			if dk != nil {
				newKeys, _ := dk.stringMap("keys")
				if !maps.Equal(keys, newKeys) {
					return spec.ErrInvalidParam.With("The device already has different identity keys; a new identity needs a new device (log in again)")
				}
				if !bytes.Equal(o.canon, dk.canon) {
					if err := c.PutDeviceKeys(ctx, localpart, deviceID, userID, dk.canon, now); err != nil {
						return err
					}
					changed = true
				}
			}
		case errors.Is(err, storage.ErrNotFound):
			if dk != nil {
				if err := c.PutDeviceKeys(ctx, localpart, deviceID, userID, dk.canon, now); err != nil {
					return err
				}
				pub, changed = dkPub, true
			}
		default:
			return err
		}
		for _, k := range slices.Concat(otks, fbs) {
			if err := checkKeySignature(k, userID, deviceID, pub); err != nil {
				return err
			}
		}
		if len(otks) > 0 {
			add := make([]storage.OneTimeKey, len(otks))
			for i, k := range otks {
				add[i] = k.OneTimeKey
			}
			existing, err := c.AddOneTimeKeys(ctx, localpart, deviceID, add, now)
			if err != nil {
				return err
			}
			for _, e := range existing {
				for _, k := range otks {
					if k.Algorithm == e.Algorithm && k.KeyID == e.KeyID && !bytes.Equal(k.KeyJSON, e.KeyJSON) {
						return spec.ErrInvalidParam.Withf("One-time key %s:%s already exists with other content", e.Algorithm, e.KeyID)
					}
				}
			}
			n, err := c.CountOneTimeKeys(ctx, localpart, deviceID)
			if err != nil {
				return err
			}
			if n > s.opts.MaxOneTimeKeysPerDevice {
				return spec.ErrTooLarge.Withf("A device may hold at most %d unclaimed one-time keys", s.opts.MaxOneTimeKeysPerDevice)
			}
		}
		for _, k := range fbs {
			if err := c.PutFallbackKey(ctx, localpart, deviceID, k.OneTimeKey); err != nil {
				return err
			}
		}
		if changed {
			if _, err := c.RecordDeviceListChange(ctx, userID); err != nil {
				return err
			}
		}
		counts, _, err = c.KeyCounts(ctx, localpart, deviceID)
		return err
	})
	if err != nil {
		return nil, err
	}
	// The device's own syncs report the new counts (and drop cached ones, homeserver/sync).
	s.wake(userID)
	if changed {
		s.wakeSharing(userID)
	}
	return counts, nil
}

// parseDeviceKeys validates a device_keys object and returns it with its ed25519 public key.
func parseDeviceKeys(raw json.RawMessage, userID, deviceID string) (object, string, error) {
	o, err := parseObject(raw, "device_keys", MaxKeyObjectBytes)
	if err != nil {
		return o, "", err
	}
	if u, _ := o.str("user_id"); u != userID {
		return o, "", spec.ErrInvalidParam.With("device_keys.user_id must be the user ID of the logged-in user")
	}
	if d, _ := o.str("device_id"); d != deviceID {
		return o, "", spec.ErrInvalidParam.With("device_keys.device_id must be the ID of the logged-in device")
	}
	var algs []string
	if raw, ok := o.fields["algorithms"]; !ok || json.Unmarshal(raw, &algs) != nil || algs == nil {
		return o, "", spec.ErrInvalidParam.With("device_keys.algorithms must be an array of strings")
	}
	for _, a := range algs {
		if a == "" || len(a) > maxIDBytes {
			return o, "", spec.ErrInvalidParam.With("device_keys.algorithms has an invalid algorithm name")
		}
	}
	keys, ok := o.stringMap("keys")
	if !ok {
		return o, "", spec.ErrInvalidParam.With("device_keys.keys must be an object of strings")
	}
	for id := range keys {
		if _, _, ok := splitKeyID(id); !ok {
			return o, "", spec.ErrInvalidParam.Withf("device_keys.keys: key ID %q is not <algorithm>:<device_id>", id)
		}
	}
	keyID := "ed25519:" + deviceID
	pub, ok := keys[keyID]
	if !ok {
		return o, "", spec.ErrInvalidParam.Withf("device_keys.keys must include %s", keyID)
	}
	if _, err := decodeKey(pub); err != nil {
		return o, "", spec.ErrInvalidParam.Withf("device_keys.keys.%s: %v", keyID, err)
	}
	if err := o.verify(userID, keyID, pub); err != nil {
		return o, "", spec.ErrInvalidParam.Withf("device_keys must be signed by %s: %v", keyID, err)
	}
	return o, pub, nil
}

// parseUploadKeys validates one_time_keys or fallback_keys, sorted by algorithm and key ID.
func parseUploadKeys(m map[string]json.RawMessage, what string) ([]uploadKey, error) {
	out := make([]uploadKey, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		alg, kid, ok := splitKeyID(id)
		if !ok {
			return nil, spec.ErrInvalidParam.Withf("%s: key ID %q is not <algorithm>:<key_id>", what, id)
		}
		raw := bytes.TrimSpace(m[id])
		k := uploadKey{OneTimeKey: storage.OneTimeKey{Algorithm: alg, KeyID: kid}}
		switch {
		case len(raw) > 0 && raw[0] == '"':
			canon, err := event.Canonical(raw)
			var str string
			if err != nil || json.Unmarshal(canon, &str) != nil || str == "" {
				return nil, spec.ErrInvalidParam.Withf("%s.%s must be a non-empty string or a key object", what, id)
			}
			if len(canon) > MaxOneTimeKeyBytes {
				return nil, spec.ErrTooLarge.Withf("%s.%s is larger than %d bytes", what, id, MaxOneTimeKeyBytes)
			}
			if strings.HasPrefix(alg, "signed_") {
				return nil, spec.ErrInvalidParam.Withf("%s.%s: %s keys must be signed key objects", what, id, alg)
			}
			k.KeyJSON = canon
		case len(raw) > 0 && raw[0] == '{':
			o, err := parseObject(raw, what+"."+id, MaxOneTimeKeyBytes)
			if err != nil {
				return nil, err
			}
			if key, _ := o.str("key"); key == "" {
				return nil, spec.ErrInvalidParam.Withf("%s.%s.key must be a non-empty string", what, id)
			}
			k.KeyJSON, k.obj = o.canon, &o
		default:
			return nil, spec.ErrInvalidParam.Withf("%s.%s must be a string or a key object", what, id)
		}
		out = append(out, k)
	}
	return out, nil
}

// checkKeySignature verifies a key object's signature by the device (public key pub, "" when the
// device has no keys yet): required for signed_* algorithms, checked when present for others.
func checkKeySignature(k uploadKey, userID, deviceID, pub string) error {
	if k.obj == nil || pub == "" {
		return nil
	}
	keyID := "ed25519:" + deviceID
	_, present := k.obj.signatures()[userID][keyID]
	if !present && !strings.HasPrefix(k.Algorithm, "signed_") {
		return nil
	}
	if err := k.obj.verify(userID, keyID, pub); err != nil {
		return spec.ErrInvalidParam.Withf("Key %s:%s must be signed by %s: %v", k.Algorithm, k.KeyID, keyID, err)
	}
	return nil
}

// UploadDehydratedKeys stores the keys a dehydrated device brings (DehydratedKeyUploader): the
// same checks as /keys/upload, for the dehydrated device instead of the caller's.
func (s *Service) UploadDehydratedKeys(ctx context.Context, userID, deviceID string, keys DehydratedKeys) error {
	req := UploadRequest{DeviceKeys: keys.DeviceKeys}
	for _, m := range []struct {
		raw  json.RawMessage
		dst  *map[string]json.RawMessage
		name string
	}{{keys.OneTimeKeys, &req.OneTimeKeys, "one_time_keys"}, {keys.FallbackKeys, &req.FallbackKeys, "fallback_keys"}} {
		if len(m.raw) == 0 || bytes.Equal(bytes.TrimSpace(m.raw), []byte("null")) {
			continue
		}
		if err := json.Unmarshal(m.raw, m.dst); err != nil {
			return spec.ErrBadJSON.Withf("%s must be an object", m.name)
		}
	}
	_, err := s.UploadKeys(ctx, userID, deviceID, req)
	return err
}
