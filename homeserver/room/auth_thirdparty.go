package room

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// checkThirdPartyInvite is rule 4.4.1 (v6/v7: 4.3.1) from its step 2: an invite that claims a
// third-party invite, allowed if the token it carries was signed with a key published in the
// matching m.room.third_party_invite event. r is the rule's index ("4.4.1").
func (c *Checker) checkThirdPartyInvite(ev *event.PDU, state StateLookup, raw json.RawMessage, target, r string) error {
	var tpi struct {
		Signed json.RawMessage `json:"signed"`
	}
	if json.Unmarshal(raw, &tpi) != nil || tpi.Signed == nil || string(tpi.Signed) == "null" {
		return reject(r+".2", "third_party_invite has no signed object")
	}
	signed := objectOf(tpi.Signed)
	var mxid, token string
	if signed == nil || json.Unmarshal(signed["mxid"], &mxid) != nil || json.Unmarshal(signed["token"], &token) != nil ||
		signed["mxid"] == nil || signed["token"] == nil {
		return reject(r+".3", "third_party_invite.signed lacks mxid or token")
	}
	if mxid != target {
		return reject(r+".4", "signed mxid %s does not match state_key %s", mxid, target)
	}
	invite := state(TypeThirdPartyInvite, token)
	if invite == nil {
		return reject(r+".5", "no m.room.third_party_invite with state_key %q", token)
	}
	if invite.Sender != ev.Sender {
		return reject(r+".6", "sender %s is not the sender of the third-party invite (%s)", ev.Sender, invite.Sender)
	}
	if signedByAnyKey(signed, thirdPartyInviteKeys(invite)) {
		return nil
	}
	return reject(r+".8", "no signature in third_party_invite.signed matches a public key of the third-party invite")
}

// thirdPartyInviteKeys are the public keys of an m.room.third_party_invite event: public_key and
// each public_keys[].public_key.
func thirdPartyInviteKeys(invite *event.PDU) []ed25519.PublicKey {
	var c struct {
		PublicKey  json.RawMessage `json:"public_key"`
		PublicKeys []struct {
			PublicKey json.RawMessage `json:"public_key"`
		} `json:"public_keys"`
	}
	_ = json.Unmarshal(invite.Content, &c)
	var keys []ed25519.PublicKey
	add := func(raw json.RawMessage) {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return
		}
		if k := decodeBase64(s); len(k) == ed25519.PublicKeySize {
			keys = append(keys, ed25519.PublicKey(k))
		}
	}
	add(c.PublicKey)
	for _, k := range c.PublicKeys {
		add(k.PublicKey)
	}
	return keys
}

// signedByAnyKey reports whether any ed25519 signature in signed["signatures"] verifies with any
// of keys over the canonical JSON of signed without "signatures" and "unsigned" (appendices,
// "Signing JSON").
func signedByAnyKey(signed map[string]json.RawMessage, keys []ed25519.PublicKey) bool {
	if len(keys) == 0 {
		return false
	}
	var sigs map[string]map[string]string
	if json.Unmarshal(signed["signatures"], &sigs) != nil || len(sigs) == 0 {
		return false
	}
	body := make(map[string]json.RawMessage, len(signed))
	for k, v := range signed {
		if k != "signatures" && k != "unsigned" {
			body[k] = v
		}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return false
	}
	msg, err := event.Canonical(raw)
	if err != nil {
		return false
	}
	for _, byKey := range sigs {
		for keyID, sig := range byKey {
			if !strings.HasPrefix(keyID, "ed25519:") {
				continue
			}
			sigBytes := decodeBase64(sig)
			if len(sigBytes) != ed25519.SignatureSize {
				continue
			}
			for _, k := range keys {
				if ed25519.Verify(k, msg, sigBytes) {
					return true
				}
			}
		}
	}
	return false
}

// decodeBase64 accepts standard or URL-safe base64, padded or not (identity servers have published
// both); nil if s is neither.
func decodeBase64(s string) []byte {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b
	}
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b
	}
	return nil
}
