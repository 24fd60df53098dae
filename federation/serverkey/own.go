package serverkey

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/signing"
)

// Own is this server's key response, GET /_matrix/key/v2/server: the current signing key in
// verify_keys, keys used before a rotation in old_verify_keys, valid_until_ts Validity ahead,
// signed by the current key. The signed response is built once and again when half of its
// validity has passed (the time notaries are asked to cache it for).
type Own struct {
	serverName string
	key        signing.Key
	old        []OldKey
	validity   time.Duration
	now        func() time.Time

	mu      sync.Mutex
	signed  []byte
	renewAt time.Time
}

// NewOwn returns our key response builder. old are the keys from before rotations.
func NewOwn(serverName string, key signing.Key, old []OldKey, validity time.Duration, now func() time.Time) *Own {
	if now == nil {
		now = time.Now
	}
	return &Own{serverName: serverName, key: key, old: old, validity: validity, now: now}
}

// Response returns the signed key response (canonical JSON).
func (o *Own) Response() ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if o.signed != nil && now.Before(o.renewAt) {
		return o.signed, nil
	}
	type verifyKey struct {
		Key string `json:"key"`
	}
	type oldKey struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	}
	body := struct {
		ServerName    string               `json:"server_name"`
		ValidUntilTS  int64                `json:"valid_until_ts"`
		VerifyKeys    map[string]verifyKey `json:"verify_keys"`
		OldVerifyKeys map[string]oldKey    `json:"old_verify_keys"`
	}{
		ServerName:    o.serverName,
		ValidUntilTS:  now.Add(o.validity).UnixMilli(),
		VerifyKeys:    map[string]verifyKey{o.key.ID: {Key: o.key.PublicBase64()}},
		OldVerifyKeys: map[string]oldKey{},
	}
	for _, k := range o.old {
		if k.KeyID != o.key.ID {
			body.OldVerifyKeys[k.KeyID] = oldKey{Key: base64.RawStdEncoding.EncodeToString(k.Public), ExpiredTS: k.ExpiredTS}
		}
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	signed, err := event.SignJSON(data, o.serverName, o.key.ID, o.key.Private)
	if err != nil {
		return nil, fmt.Errorf("sign key response: %w", err)
	}
	o.signed, o.renewAt = signed, now.Add(o.validity/2)
	return signed, nil
}

// Key returns our key keyID if it was valid at atTS: the current key always, an old key for
// times before it expired; requests (current=true) accept only the current key.
func (o *Own) Key(keyID string, atTS int64, current bool) (ed25519.PublicKey, error) {
	if keyID == o.key.ID {
		return o.key.Public(), nil
	}
	for _, k := range o.old {
		if k.KeyID == keyID && !current && atTS < k.ExpiredTS {
			return k.Public, nil
		}
	}
	return nil, fmt.Errorf("%w: %s of %s (our own)", event.ErrKeyNotFound, keyID, o.serverName)
}

// Sign adds our signature to a JSON object (a notary response).
func (o *Own) Sign(data []byte) ([]byte, error) {
	return event.SignJSON(data, o.serverName, o.key.ID, o.key.Private)
}
