// Package serverkey manages server signing keys (server-server API, "Retrieving server keys"):
// this server's own key response (Own), and the keys of other servers (Ring), fetched from them
// or through notaries, verified, cached in memory and in the database, and served again when this
// server acts as a notary. Ring.Key is the event.KeyFunc that event signature checks use.
package serverkey

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// ErrInvalidResponse is matched by the errors of ParseResponse.
var ErrInvalidResponse = errors.New("invalid server key response")

// Response is a verified /_matrix/key/v2/server answer.
type Response struct {
	ServerName   string
	ValidUntilTS int64
	VerifyKeys   map[string]ed25519.PublicKey
	OldKeys      map[string]OldKey
	// Raw is the canonical JSON of the response with only ServerName's signatures, as stored
	// and as served again by a notary.
	Raw []byte
}

// OldKey is a key in old_verify_keys: valid for events sent before ExpiredTS, never for requests.
type OldKey struct {
	KeyID     string
	Public    ed25519.PublicKey
	ExpiredTS int64
}

type wireKeys struct {
	ServerName   *string `json:"server_name"`
	ValidUntilTS *int64  `json:"valid_until_ts"`
	VerifyKeys   map[string]struct {
		Key string `json:"key"`
	} `json:"verify_keys"`
	OldVerifyKeys map[string]struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	} `json:"old_verify_keys"`
}

// ParseResponse parses a key response that must be for serverName and verifies it: every key in
// verify_keys must have signed it (self-signature), and valid_until_ts must be present. Keys
// that are not ed25519 are ignored. Signatures of other servers (notaries) are dropped from Raw.
func ParseResponse(data []byte, serverName string) (*Response, error) {
	var w wireKeys
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
	}
	if w.ServerName == nil || *w.ServerName != serverName {
		return nil, fmt.Errorf("%w: it is not for %s", ErrInvalidResponse, serverName)
	}
	if w.ValidUntilTS == nil {
		return nil, fmt.Errorf("%w: no valid_until_ts", ErrInvalidResponse)
	}
	raw, err := onlySignaturesOf(data, serverName)
	if err != nil {
		return nil, err
	}
	r := &Response{ServerName: serverName, ValidUntilTS: *w.ValidUntilTS, VerifyKeys: map[string]ed25519.PublicKey{},
		OldKeys: map[string]OldKey{}, Raw: raw}
	for id, k := range w.VerifyKeys {
		if !strings.HasPrefix(id, "ed25519:") {
			continue
		}
		pub, err := decodeKey(k.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: verify key %s: %w", ErrInvalidResponse, id, err)
		}
		if err := event.VerifyJSON(raw, serverName, id, pub); err != nil {
			return nil, fmt.Errorf("%w: not self-signed by %s: %w", ErrInvalidResponse, id, err)
		}
		r.VerifyKeys[id] = pub
	}
	if len(r.VerifyKeys) == 0 {
		return nil, fmt.Errorf("%w: no ed25519 verify key", ErrInvalidResponse)
	}
	for id, k := range w.OldVerifyKeys {
		if !strings.HasPrefix(id, "ed25519:") {
			continue
		}
		if _, current := r.VerifyKeys[id]; current {
			continue
		}
		pub, err := decodeKey(k.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: old verify key %s: %w", ErrInvalidResponse, id, err)
		}
		r.OldKeys[id] = OldKey{KeyID: id, Public: pub, ExpiredTS: k.ExpiredTS}
	}
	return r, nil
}

func decodeKey(s string) (ed25519.PublicKey, error) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("not 32 bytes of base64")
	}
	return ed25519.PublicKey(raw), nil
}

// onlySignaturesOf returns the canonical form of the JSON object data keeping only the
// signatures of server.
func onlySignaturesOf(data []byte, server string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
	}
	var sigs map[string]json.RawMessage
	if err := json.Unmarshal(obj["signatures"], &sigs); err != nil || sigs[server] == nil {
		return nil, fmt.Errorf("%w: no signatures of %s", ErrInvalidResponse, server)
	}
	kept, err := json.Marshal(map[string]json.RawMessage{server: sigs[server]})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
	}
	obj["signatures"] = kept
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
	}
	canon, err := event.Canonical(out)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
	}
	return canon, nil
}

// verifyNotary checks that a notary signed data with at least one of its configured keys and
// that none of its signatures by those keys is bad.
func verifyNotary(data []byte, n Notary) error {
	verified := 0
	for id, pub := range n.Keys {
		err := event.VerifyJSON(data, n.ServerName, id, pub)
		if errors.Is(err, event.ErrNoSignature) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: notary %s: %w", ErrInvalidResponse, n.ServerName, err)
		}
		verified++
	}
	if verified == 0 {
		return fmt.Errorf("%w: not signed by notary %s with a configured key", ErrInvalidResponse, n.ServerName)
	}
	return nil
}
