package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Key objects (device keys, cross-signing keys, signed one-time keys) are signed JSON (appendices,
// "Signing JSON"): the signature covers the canonical JSON without "signatures" and "unsigned".
// They are stored canonical and without "unsigned", so two uploads of the same key compare equal
// byte for byte.

// object is a decoded key object with its canonical bytes.
type object struct {
	canon  []byte                     // canonical JSON without "unsigned"
	fields map[string]json.RawMessage // its members
}

// parseObject canonicalises a JSON object, drops "unsigned" and checks the size. what names the
// object in error messages.
func parseObject(raw []byte, what string, maxBytes int) (object, error) {
	canon, err := event.Canonical(raw)
	if err != nil {
		return object{}, spec.ErrInvalidParam.Withf("%s is not valid JSON for signing: %v", what, err)
	}
	var fields map[string]json.RawMessage
	if len(canon) == 0 || canon[0] != '{' || json.Unmarshal(canon, &fields) != nil {
		return object{}, spec.ErrInvalidParam.Withf("%s must be a JSON object", what)
	}
	if _, ok := fields["unsigned"]; ok {
		delete(fields, "unsigned")
		if canon, err = event.CanonicalValue(fields); err != nil {
			return object{}, spec.ErrInvalidParam.Withf("%s: %v", what, err)
		}
	}
	if len(canon) > maxBytes {
		return object{}, spec.ErrTooLarge.Withf("%s is larger than %d bytes", what, maxBytes)
	}
	return object{canon: canon, fields: fields}, nil
}

// str reads a string member ("" and false when absent or not a string).
func (o object) str(name string) (string, bool) {
	var s string
	raw, ok := o.fields[name]
	if !ok || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// stringMap reads an object member whose values are all strings.
func (o object) stringMap(name string) (map[string]string, bool) {
	var m map[string]string
	raw, ok := o.fields[name]
	if !ok || json.Unmarshal(raw, &m) != nil || m == nil {
		return nil, false
	}
	return m, true
}

// signatures reads the "signatures" member: user ID → key ID → signature. A malformed member
// reads as none.
func (o object) signatures() map[string]map[string]string {
	var m map[string]map[string]string
	if raw, ok := o.fields["signatures"]; ok {
		_ = json.Unmarshal(raw, &m)
	}
	return m
}

// signed returns the bytes a signature covers: the canonical object without signatures.
func (o object) signed() []byte {
	if _, ok := o.fields["signatures"]; !ok {
		return o.canon
	}
	rest := make(map[string]json.RawMessage, len(o.fields))
	for k, v := range o.fields {
		if k != "signatures" {
			rest[k] = v
		}
	}
	b, _ := event.CanonicalValue(rest) // members of a canonical object: cannot fail
	return b
}

// sameContent reports whether two objects are equal apart from their signatures.
func sameContent(a, b object) bool { return bytes.Equal(a.signed(), b.signed()) }

// verify checks the signature by signer's key keyID (e.g. "ed25519:DEVICE") with the public key
// pub (unpadded base64).
func (o object) verify(signer, keyID, pub string) error {
	key, err := decodeKey(pub)
	if err != nil {
		return err
	}
	return event.VerifyJSON(o.canon, signer, keyID, key)
}

// decodeKey decodes an unpadded base64 ed25519 public key.
func decodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not an unpadded base64 ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

// withSignatures returns the stored object bytes with extra signatures merged in and, when
// unsigned is non-nil, an "unsigned" member. With nothing to add it returns stored as is.
func withSignatures(stored []byte, extra map[string]map[string]string, unsigned any) ([]byte, error) {
	if len(extra) == 0 && unsigned == nil {
		return stored, nil
	}
	if len(extra) == 0 && len(stored) >= 2 && stored[len(stored)-1] == '}' {
		// Stored objects have no "unsigned": append it without decoding (the query hot path).
		u, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 0, len(stored)+len(u)+13)
		out = append(out, stored[:len(stored)-1]...)
		if len(stored) > 2 {
			out = append(out, ',')
		}
		out = append(out, `"unsigned":`...)
		out = append(out, u...)
		return append(out, '}'), nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(stored, &fields); err != nil {
		return nil, fmt.Errorf("e2ee: stored key object: %w", err)
	}
	if len(extra) > 0 {
		var sigs map[string]map[string]string
		if raw, ok := fields["signatures"]; ok {
			_ = json.Unmarshal(raw, &sigs)
		}
		if sigs == nil {
			sigs = map[string]map[string]string{}
		}
		for user, keys := range extra {
			if sigs[user] == nil {
				sigs[user] = map[string]string{}
			}
			for k, v := range keys {
				sigs[user][k] = v
			}
		}
		raw, err := json.Marshal(sigs)
		if err != nil {
			return nil, err
		}
		fields["signatures"] = raw
	}
	if unsigned != nil {
		raw, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		fields["unsigned"] = raw
	}
	return json.Marshal(fields)
}

// splitKeyID splits "algorithm:id"; ok is false unless both parts are non-empty and short.
func splitKeyID(s string) (alg, id string, ok bool) {
	alg, id, ok = strings.Cut(s, ":")
	return alg, id, ok && alg != "" && id != "" && len(s) <= maxIDBytes
}
