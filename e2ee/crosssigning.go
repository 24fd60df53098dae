package e2ee

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// SigningKeys is the body of POST /keys/device_signing/upload without "auth"; absent keys are nil.
type SigningKeys struct {
	Master      json.RawMessage
	SelfSigning json.RawMessage
	UserSigning json.RawMessage
}

// ErrAuthRequired is returned by UploadDeviceSigningKeys when the upload would replace existing
// cross-signing keys and the caller has not completed user-interactive authentication.
var ErrAuthRequired = errors.New("e2ee: replacing cross-signing keys needs user-interactive authentication")

// crossKey is a validated cross-signing key of an upload.
type crossKey struct {
	usage string
	obj   object
	pub   string
}

// UploadDeviceSigningKeys stores the user's cross-signing keys. Each key must name the user, list
// its usage and hold exactly one ed25519 key; self-signing and user-signing keys must be signed by
// the master key of the request or, without one, the stored one (M_INVALID_SIGNATURE; M_MISSING_PARAM
// when there is no master key at all); no key may equal one of the user's device IDs (M_FORBIDDEN).
//
// Without authenticated, the upload goes through only when the user has no master key yet, or when
// the request holds the stored master key and every key in it equals the stored one (a retried
// upload); otherwise it returns ErrAuthRequired and stores nothing. The decision is taken inside
// the transaction that stores the keys, so two first uploads cannot both skip authentication.
func (s *Service) UploadDeviceSigningKeys(ctx context.Context, userID string, keys SigningKeys, authenticated bool) error {
	localpart, ok := s.localUser(userID)
	if !ok {
		return spec.ErrForbidden.With("Keys can only be uploaded by users of this server")
	}
	var ups []crossKey
	for _, k := range []struct {
		usage string
		raw   json.RawMessage
	}{{UsageMaster, keys.Master}, {UsageSelfSigning, keys.SelfSigning}, {UsageUserSigning, keys.UserSigning}} {
		if len(k.raw) == 0 || bytes.Equal(bytes.TrimSpace(k.raw), []byte("null")) {
			continue
		}
		ck, err := parseCrossSigningKey(k.raw, userID, k.usage)
		if err != nil {
			return err
		}
		ups = append(ups, ck)
	}
	var changed bool
	err := s.store.Write(ctx, func(c storage.Conn) error {
		changed = false
		// Queue on the device_lists counter before reading the stored keys (lock order of
		// storage.Conn.DeleteDeviceKeys): the no-UIA decision then sees every committed upload.
		if _, err := c.LockPosition(ctx, storage.StreamDeviceLists); err != nil {
			return err
		}
		stored, err := c.CrossSigningKeysOf(ctx, []string{userID})
		if err != nil {
			return err
		}
		cur := map[string]storage.CrossSigningKey{}
		for _, k := range stored {
			cur[k.Usage] = k
		}
		if _, hasMaster := cur[UsageMaster]; hasMaster && !authenticated {
			same := len(ups) > 0 && ups[0].usage == UsageMaster
			for _, u := range ups {
				same = same && bytes.Equal(u.obj.canon, cur[u.usage].KeyJSON)
			}
			if !same {
				return ErrAuthRequired
			}
		}
		masterPub := cur[UsageMaster].PublicKey
		for _, u := range ups {
			if u.usage == UsageMaster {
				masterPub = u.pub
			}
		}
		for _, u := range ups {
			if u.usage == UsageMaster {
				continue
			}
			if masterPub == "" {
				return spec.ErrMissingParam.With("No master signing key is available to check the " + u.usage + " key")
			}
			if err := u.obj.verify(userID, "ed25519:"+masterPub, masterPub); err != nil {
				return ErrInvalidSignature.Withf("The %s key must be signed by the master key: %v", u.usage, err)
			}
		}
		if len(ups) > 0 {
			devs, err := c.Devices(ctx, localpart)
			if err != nil {
				return err
			}
			for _, u := range ups {
				for _, d := range devs {
					if d.DeviceID == u.pub {
						return spec.ErrForbidden.With("Key ID in use: the " + u.usage + " key equals a device ID")
					}
				}
			}
		}
		var pos int64
		for _, u := range ups {
			old, had := cur[u.usage]
			if had && bytes.Equal(old.KeyJSON, u.obj.canon) {
				continue
			}
			if pos == 0 {
				if pos, err = c.RecordDeviceListChange(ctx, userID); err != nil {
					return err
				}
			}
			if had && old.PublicKey != u.pub {
				// Signatures by the replaced key, or on a replaced master key, sign nothing current.
				if err := c.DeleteKeySignaturesBy(ctx, userID, "ed25519:"+old.PublicKey); err != nil {
					return err
				}
				if u.usage == UsageMaster {
					if err := c.DeleteKeySignaturesOn(ctx, userID, old.PublicKey); err != nil {
						return err
					}
				}
			}
			if err := c.PutCrossSigningKey(ctx, storage.CrossSigningKey{UserID: userID, Usage: u.usage, PublicKey: u.pub,
				KeyJSON: u.obj.canon, StreamPos: pos}); err != nil {
				return err
			}
			changed = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if changed {
		s.wakeSharing(userID)
	}
	return nil
}

// parseCrossSigningKey validates one key of a cross-signing upload.
func parseCrossSigningKey(raw json.RawMessage, userID, usage string) (crossKey, error) {
	what := usage + "_key"
	o, err := parseObject(raw, what, MaxKeyObjectBytes)
	if err != nil {
		return crossKey{}, err
	}
	if u, _ := o.str("user_id"); u != userID {
		return crossKey{}, spec.ErrInvalidParam.Withf("%s.user_id must be the user ID of the logged-in user", what)
	}
	var usages []string
	if raw, ok := o.fields["usage"]; !ok || json.Unmarshal(raw, &usages) != nil || !slices.Contains(usages, usage) {
		return crossKey{}, spec.ErrInvalidParam.Withf("%s.usage must include %q", what, usage)
	}
	keys, ok := o.stringMap("keys")
	if !ok || len(keys) != 1 {
		return crossKey{}, spec.ErrInvalidParam.Withf("%s.keys must hold exactly one key", what)
	}
	var id, pub string
	for k, v := range keys {
		id, pub = k, v
	}
	alg, idPub, _ := strings.Cut(id, ":")
	if alg != "ed25519" || idPub != pub {
		return crossKey{}, spec.ErrInvalidParam.Withf("%s.keys must be {\"ed25519:<public key>\": \"<public key>\"}", what)
	}
	if _, err := decodeKey(pub); err != nil {
		return crossKey{}, spec.ErrInvalidParam.Withf("%s: %v", what, err)
	}
	return crossKey{usage: usage, obj: o, pub: pub}, nil
}

// signedItem is one object of a signatures upload.
type signedItem struct {
	target, keyID string
	obj           object
}

// UploadSignatures stores signatures the user made (POST /keys/signatures/upload): body is target
// user → key ID → the signed key object. Accepted are
//   - the user's own devices signed by their self-signing key (key ID = device ID),
//   - the user's own master key signed by one of their devices (key ID = master public key),
//   - another local user's master key signed by the user's user-signing key.
//
// The object must equal the stored key apart from its signatures, and the signature must verify.
// Failures are per key: M_INVALID_SIGNATURE (bad, missing or mismatching), M_NOT_FOUND (no such
// key, or the signing key is not uploaded). Accepted signatures are stored in one transaction with
// a device-list change of their target users, whose room-mates' syncs are woken.
func (s *Service) UploadSignatures(ctx context.Context, userID string, body map[string]map[string]json.RawMessage) (map[string]map[string]*spec.Error, error) {
	if _, ok := s.localUser(userID); !ok {
		return nil, spec.ErrForbidden.With("Signatures can only be uploaded by users of this server")
	}
	failures := map[string]map[string]*spec.Error{}
	fail := func(target, keyID string, e *spec.Error) {
		if failures[target] == nil {
			failures[target] = map[string]*spec.Error{}
		}
		failures[target][keyID] = e
	}
	var items []signedItem
	n := 0
	for _, target := range slices.Sorted(maps.Keys(body)) {
		if n += len(body[target]); n > MaxSignedObjectsPerUpload {
			return nil, spec.ErrTooLarge.Withf("At most %d signed objects may be uploaded at once", MaxSignedObjectsPerUpload)
		}
		for _, keyID := range slices.Sorted(maps.Keys(body[target])) {
			o, err := parseObject(body[target][keyID], "signed object", MaxKeyObjectBytes)
			var se *spec.Error
			if errors.As(err, &se) {
				fail(target, keyID, se)
				continue
			}
			items = append(items, signedItem{target: target, keyID: keyID, obj: o})
		}
	}
	var targets []string
	err := s.store.Write(ctx, func(c storage.Conn) error {
		targets = targets[:0]
		if len(items) == 0 {
			return nil
		}
		if _, err := c.LockPosition(ctx, storage.StreamDeviceLists); err != nil { // lock order: see DeleteDeviceKeys
			return err
		}
		users := []string{userID}
		for _, it := range items {
			if _, local := s.localUser(it.target); local && !slices.Contains(users, it.target) {
				users = append(users, it.target)
			}
		}
		stored, err := c.CrossSigningKeysOf(ctx, users)
		if err != nil {
			return err
		}
		cross := map[[2]string]storage.CrossSigningKey{}
		for _, k := range stored {
			cross[[2]string{k.UserID, k.Usage}] = k
		}
		done := map[string]bool{}
		for _, it := range items {
			sigs, serr := s.checkSigned(ctx, c, userID, it, cross)
			if serr != nil {
				var se *spec.Error
				if !errors.As(serr, &se) {
					return serr
				}
				fail(it.target, it.keyID, se)
				continue
			}
			for _, sg := range sigs {
				if err := c.PutKeySignature(ctx, sg); err != nil {
					return err
				}
			}
			if !done[it.target] {
				done[it.target] = true
				targets = append(targets, it.target)
			}
		}
		if len(targets) > 0 {
			_, err = c.RecordDeviceListChange(ctx, targets...)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(targets) > 0 {
		s.wakeSharing(targets...)
		s.wake(userID)
	}
	return failures, nil
}

// checkSigned verifies one signed object of a signatures upload and returns the signatures to
// store; a *spec.Error is a failure of this object only.
func (s *Service) checkSigned(ctx context.Context, c storage.Conn, signer string, it signedItem,
	cross map[[2]string]storage.CrossSigningKey) ([]storage.KeySignature, error) {
	mismatch := ErrInvalidSignature.With("The signed object does not match the stored key")
	if it.target != signer {
		master, ok := cross[[2]string{it.target, UsageMaster}]
		if !ok || master.PublicKey != it.keyID {
			return nil, spec.ErrNotFound.With("Unknown master key")
		}
		usk, ok := cross[[2]string{signer, UsageUserSigning}]
		if !ok {
			return nil, spec.ErrNotFound.With("No user-signing key uploaded")
		}
		stored, err := parseObject(master.KeyJSON, "stored key", 1<<30)
		if err != nil {
			return nil, err
		}
		if !sameContent(stored, it.obj) {
			return nil, mismatch
		}
		return oneSignature(it, signer, usk.PublicKey)
	}
	if master, ok := cross[[2]string{signer, UsageMaster}]; ok && master.PublicKey == it.keyID {
		stored, err := parseObject(master.KeyJSON, "stored key", 1<<30)
		if err != nil {
			return nil, err
		}
		if !sameContent(stored, it.obj) {
			return nil, mismatch
		}
		localpart, _ := s.localUser(signer)
		var out []storage.KeySignature
		for keyID, sig := range it.obj.signatures()[signer] {
			alg, dev, _ := strings.Cut(keyID, ":")
			if alg != "ed25519" || dev == master.PublicKey {
				continue // the master key's own signature is part of the stored key
			}
			if _, known := stored.signatures()[signer][keyID]; known {
				continue
			}
			devJSON, err := c.DeviceKeysJSON(ctx, localpart, dev)
			if errors.Is(err, storage.ErrNotFound) {
				return nil, spec.ErrNotFound.Withf("Unknown device %s", dev)
			}
			if err != nil {
				return nil, err
			}
			devObj, err := parseObject(devJSON, "stored device keys", 1<<30)
			if err != nil {
				return nil, err
			}
			devKeys, _ := devObj.stringMap("keys")
			if err := it.obj.verify(signer, keyID, devKeys[keyID]); err != nil {
				return nil, ErrInvalidSignature.Withf("Signature by %s does not verify: %v", keyID, err)
			}
			out = append(out, storage.KeySignature{TargetUserID: signer, TargetKeyID: it.keyID, SignerUserID: signer, SignerKeyID: keyID, Signature: sig})
		}
		if len(out) == 0 {
			return nil, ErrInvalidSignature.With("No new signature by one of the user's devices")
		}
		return out, nil
	}
	localpart, _ := s.localUser(signer)
	devJSON, err := c.DeviceKeysJSON(ctx, localpart, it.keyID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, spec.ErrNotFound.With("Unknown device")
	}
	if err != nil {
		return nil, err
	}
	ssk, ok := cross[[2]string{signer, UsageSelfSigning}]
	if !ok {
		return nil, spec.ErrNotFound.With("No self-signing key uploaded")
	}
	stored, err := parseObject(devJSON, "stored device keys", 1<<30)
	if err != nil {
		return nil, err
	}
	if !sameContent(stored, it.obj) {
		return nil, mismatch
	}
	return oneSignature(it, signer, ssk.PublicKey)
}

// oneSignature verifies the signature of it by signer's cross-signing key pub.
func oneSignature(it signedItem, signer, pub string) ([]storage.KeySignature, error) {
	keyID := "ed25519:" + pub
	sig, ok := it.obj.signatures()[signer][keyID]
	if !ok {
		return nil, ErrInvalidSignature.Withf("Missing signature by %s", keyID)
	}
	if err := it.obj.verify(signer, keyID, pub); err != nil {
		return nil, ErrInvalidSignature.Withf("Signature by %s does not verify: %v", keyID, err)
	}
	return []storage.KeySignature{{TargetUserID: it.target, TargetKeyID: it.keyID, SignerUserID: signer, SignerKeyID: keyID, Signature: sig}}, nil
}
